"""What the vision stage's models cost per frame here, and the floor that puts under the stage
(`python -m bench.vision --model-costs`).

On the bench's 30 s check-in (bench.pipeline.clip_for, 1280x720, 30 fps), the frames the stage
analyses (VisionSettings.sample_fps a second) go through MediaPipe's face landmarker (as the stage
configures it: MAX_FACES, blendshapes, the transformation matrix) and its hand landmarker
(MAX_HANDS) in VIDEO mode, each alone, in turns, twice; beside them the frame size (the analysis
size and half of it) and the variants that would cost less (no blendshapes, one hand). Then the
decode as the stage's decode thread does it (OpenCV: every frame grabbed, the sampled ones
converted) and `ffmpeg -f null` of the same clip.

The floor: decode + frames x (face + hands) CPU seconds, spread perfectly over the machine's
cores, against the plain decode's wall seconds. No emotion network, head pose, evidence, clip or
AWS call is in it, so the stage can only be slower than the floor.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from statistics import median

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from bench.pipeline import clip_for
from services.vision.landmarks import MAX_FACES, MAX_HANDS
from services.vision.settings import VisionSettings


def _decode(clip: Path, sample_fps: float) -> tuple[list[np.ndarray], float]:
    """The frames the stage samples (RGB, one every 1/sample_fps s) and the CPU seconds of decoding
    them as its decode thread does."""
    before = time.process_time()
    cap, frames, n, next_t = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG), [], 0, 0.0
    fps = cap.get(cv2.CAP_PROP_FPS)
    while cap.grab():
        if n / fps + 0.5 / fps >= next_t:
            ok, bgr = cap.retrieve()
            if ok:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            next_t += 1 / sample_fps
        n += 1
    cap.release()
    return frames, time.process_time() - before


def _plain_decode(clip: Path) -> tuple[float, float]:
    """(CPU s, wall s) of ffmpeg decoding the video stream to nothing."""
    start, before = time.perf_counter(), os.times()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-map", "0:v:0", "-f", "null", "-"], check=True)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system), \
        time.perf_counter() - start


def _per_frame_ms(make, frames: list[np.ndarray], side: int) -> float:
    if side != frames[0].shape[1]:
        frames = [np.ascontiguousarray(cv2.resize(f, (side, round(f.shape[0] * side / f.shape[1])),
                                                  interpolation=cv2.INTER_AREA)) for f in frames]
    with make() as model:
        before = time.process_time()
        for k, frame in enumerate(frames):
            model.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame), k * 250)
        return 1000 * (time.process_time() - before) / len(frames)


def model_costs(out: Path, rounds: int = 2) -> dict:
    settings = VisionSettings()
    clip = clip_for(30.0)
    frames, decode_cpu = _decode(clip, settings.sample_fps)
    plain_cpu, plain_wall = _plain_decode(clip)

    def face(blendshapes: bool):
        return lambda: vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(settings.face_landmarker_path)),
            running_mode=vision.RunningMode.VIDEO, num_faces=MAX_FACES, output_face_blendshapes=blendshapes,
            output_facial_transformation_matrixes=True))

    def hands(count: int):
        return lambda: vision.HandLandmarker.create_from_options(vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(settings.hand_landmarker_path)),
            running_mode=vision.RunningMode.VIDEO, num_hands=count))

    width = frames[0].shape[1]
    cases = {"face (as the stage)": (face(True), width), "face, half size": (face(True), width // 2),
             "face, no blendshapes": (face(False), width), f"hands, {MAX_HANDS} (as the stage)": (hands(MAX_HANDS), width),
             "hands, half size": (hands(MAX_HANDS), width // 2), "hands, 1": (hands(1), width)}
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (make, side) in cases.items():
            runs[name].append(_per_frame_ms(make, frames, side))
    ms = {name: round(median(values), 2) for name, values in runs.items()}
    cores = os.cpu_count() or 1
    floor_cpu = decode_cpu + len(frames) * (ms["face (as the stage)"] + ms[f"hands, {MAX_HANDS} (as the stage)"]) / 1000
    report = {
        "clip": clip.name, "frames_analysed": len(frames), "sample_fps": settings.sample_fps,
        "per_frame_cpu_ms": ms, "decode_cpu_s": round(decode_cpu, 2),
        "plain_decode": {"cpu_s": round(plain_cpu, 2), "wall_s": round(plain_wall, 2)},
        "cores": cores, "floor_cpu_s": round(floor_cpu, 2), "floor_wall_s": round(floor_cpu / cores, 2),
        "floor_over_plain_decode": round(floor_cpu / cores / plain_wall, 2),
    }
    for name, value in ms.items():
        print(f"{name:26s} {value:6.2f} CPU ms a frame")
    print(f"decode as the stage does: {decode_cpu:.2f} CPU s; ffmpeg -f null: {plain_cpu:.2f} CPU s, {plain_wall:.2f} s")
    print(f"floor: {floor_cpu:.2f} CPU s = {floor_cpu / cores:.2f} s on {cores} cores = "
          f"{report['floor_over_plain_decode']:.2f}x the plain decode ({len(frames)} frames)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
