"""shared.runtime.media against real files made by schizodot.samples (ffmpeg + espeak-ng), nothing mocked."""

from __future__ import annotations

import json
import re
import subprocess
import wave
from pathlib import Path

import pytest

from schizodot import samples
from shared.domain.errors import InputError
from shared.runtime.filetype import sniff
from shared.runtime.media import MediaInfo, extract_audio, probe

SMALL = {"width": 320, "height": 240, "fps": 15}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def bad(media: Path) -> dict[str, Path]:
    return samples.bad_inputs(media / "bad")


@pytest.fixture(scope="module")
def video(media: Path) -> Path:
    return samples.checkin_video(media / "checkin.mp4", seconds=4.0, **SMALL)


def _input_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(InputError) as caught:
        probe(path, **kwargs)
    message = str(caught.value)
    assert str(path.parent) not in message and "Traceback" not in message and "0x" not in message
    return message


# --- bad inputs ------------------------------------------------------------------------

def test_empty_file(bad: dict[str, Path]) -> None:
    assert _input_error(bad["empty"]) == "the file is empty (0 bytes)"


def test_random_bytes(bad: dict[str, Path]) -> None:
    assert _input_error(bad["random_bytes"]) == "the file is not a recognisable audio or video file"


def test_jpeg_named_mp4(bad: dict[str, Path]) -> None:
    assert _input_error(bad["jpeg_named_mp4"]) == "the file is not a video: it is a JPEG image"


def test_truncated_index(bad: dict[str, Path]) -> None:
    assert _input_error(bad["truncated_index"]) == (
        "the video is truncated or incomplete (its index is missing); upload the whole file again"
    )


def test_truncated_data(bad: dict[str, Path]) -> None:
    message = _input_error(bad["truncated_data"])
    match = re.fullmatch(r"the video is truncated at (\d+\.\d) s \(the file says 10\.0 s\)", message)
    assert match, message
    assert 2.0 < float(match.group(1)) < 6.0


def test_truncation_check_can_be_skipped(bad: dict[str, Path]) -> None:
    assert probe(bad["truncated_data"], check_truncation=False).duration_seconds == pytest.approx(10.0, abs=0.1)


def test_truncated_webm(media: Path) -> None:
    whole = samples.checkin_video(media / "whole.webm", seconds=5.0, **SMALL)
    data = whole.read_bytes()
    cut = media / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    assert re.fullmatch(r"the video is truncated at \d+\.\d s \(the file says 5\.0 s\)", _input_error(cut))
    assert probe(whole).video_codec == "vp8"


def test_no_audio_or_video_stream(bad: dict[str, Path]) -> None:
    assert _input_error(bad["no_streams"]) == "the file has no audio or video stream"


def test_too_short(bad: dict[str, Path]) -> None:
    assert _input_error(bad["too_short"]) == "the recording is too short (0.5 s); it must be at least 1 s"
    assert probe(bad["too_short"], min_duration_seconds=0.2).duration_seconds == pytest.approx(0.5, abs=0.1)


def test_too_long(media: Path, video: Path) -> None:
    long_wav = media / "twenty_minutes.wav"  # 9.6 MB of 8 kHz 8-bit silence, made in a blink
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
                    "-t", "1200", "-c:a", "pcm_u8", str(long_wav)], check=True, timeout=60)
    assert _input_error(long_wav) == "the recording is 20 min long; the limit is 15 min"
    assert _input_error(video, max_duration_seconds=2) == "the recording is 4 s long; the limit is 2 s"
    assert probe(long_wav, max_duration_seconds=1500).duration_seconds == pytest.approx(1200.0)


def test_not_media_named_as_audio(media: Path) -> None:
    text = media / "notes.m4a"
    text.write_text("take two tablets every morning\n", encoding="utf-8")
    assert _input_error(text) == "the file is not an audio recording: it is plain text"


@pytest.mark.parametrize(("head", "kind"), [
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"),
    (b"GIF89a" + bytes(64), "a GIF image"),
    (b"%PDF-1.7\n" + bytes(64), "a PDF document"),
    (b"PK\x03\x04" + bytes(64), "a ZIP archive"),
    (b"\x00\x00\x00\x18ftypheic" + bytes(64), "a HEIC image"),
    (b"hello, this is text\n", "plain text"),
    (b"\x00\x00\x00\x18ftypisom" + bytes(64), None),
    (b"\x1aE\xdf\xa3" + bytes(64), None),
    (b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64), None),
    (b"ID3\x04\x00" + bytes(64), None),
])
def test_sniff(tmp_path: Path, head: bytes, kind: str | None) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(head)
    assert sniff(path) == kind


# --- good inputs -------------------------------------------------------------------

def test_good_video(video: Path) -> None:
    info = probe(video)
    assert isinstance(info, MediaInfo)
    assert info.format_name.startswith("mov,mp4")
    assert info.duration_seconds == pytest.approx(4.0, abs=0.1)
    assert info.size_bytes == video.stat().st_size
    assert (info.has_video, info.has_audio) == (True, True)
    assert (info.video_codec, info.width, info.height, info.fps, info.rotation) == ("h264", 320, 240, 15.0, 0)
    assert (info.audio_codec, info.audio_channels) == ("aac", 1)
    assert info.audio_sample_rate == 48000
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()


def test_video_without_sound(media: Path) -> None:
    info = probe(samples.checkin_video(media / "silent.mp4", seconds=3.0, with_audio=False, **SMALL))
    assert (info.has_video, info.has_audio, info.audio_codec) == (True, False, None)
    assert info.duration_seconds == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize(("name", "codec"), [("voice.m4a", "aac"), ("voice.wav", "pcm_s16le")])
def test_audio_only(media: Path, name: str, codec: str) -> None:
    info = probe(samples.checkin_video(media / name, seconds=3.0, with_video=False))
    assert (info.has_video, info.has_audio, info.audio_codec) == (False, True, codec)
    assert (info.video_codec, info.width, info.height, info.fps) == (None, None, None, None)
    assert info.duration_seconds == pytest.approx(3.0, abs=0.1)


def test_rotation(media: Path, video: Path) -> None:
    rotated = media / "rotated.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True, timeout=30)
    # ffmpeg 5.1 stores rotate=90 as a 90° counter-clockwise display matrix: 270 clockwise.
    assert probe(rotated).rotation in (90, 270)


# --- audio extraction -------------------------------------------------------------

def _wav(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()


def test_extract_audio_from_video(media: Path, video: Path) -> None:
    out = extract_audio(video, media / "out" / "audio.wav")
    assert out == media / "out" / "audio.wav"
    rate, channels, width, seconds = _wav(out)
    assert (rate, channels, width) == (16000, 1, 2)
    assert seconds == pytest.approx(4.0, abs=0.05)
    assert [p.name for p in out.parent.iterdir()] == ["audio.wav"]  # no partial file left behind


def test_extract_audio_rate_and_source(media: Path) -> None:
    voice = samples.checkin_video(media / "voice8k.m4a", seconds=2.0, with_video=False)
    rate, channels, _, seconds = _wav(extract_audio(voice, media / "voice8k.wav", sample_rate=8000))
    assert (rate, channels) == (8000, 1)
    assert seconds == pytest.approx(2.0, abs=0.05)


def test_extract_audio_without_sound(media: Path) -> None:
    silent = samples.checkin_video(media / "mute.mp4", seconds=2.0, with_audio=False, **SMALL)
    with pytest.raises(InputError, match=r"^the file has no audio track$"):
        extract_audio(silent, media / "mute.wav")
    assert not (media / "mute.wav").exists()


def test_extract_audio_corrupt_stream(media: Path, bad: dict[str, Path]) -> None:
    assert probe(bad["corrupt_audio"]).has_audio  # the header is fine; the data is not
    with pytest.raises(InputError) as caught:
        extract_audio(bad["corrupt_audio"], media / "corrupt.wav")
    message = str(caught.value)
    assert message.startswith("the audio track is damaged and cannot be decoded (")
    assert "audio frames could not be decoded" in message
    assert str(media) not in message and "0x" not in message and "\n" not in message
    assert not (media / "corrupt.wav").exists()


def test_extract_audio_not_media(bad: dict[str, Path], media: Path) -> None:
    with pytest.raises(InputError, match="^the file is not a recognisable audio or video file$"):
        extract_audio(bad["random_bytes"], media / "random.wav")
