"""The README's screenshots of the console and the patient page, taken from a running stack
after `make demo` (its demo patient's history), with Debian's chromium.

    .venv/bin/python docs/screenshots/take.py [--patient-id demo-patient-001] [--state-dir .stack]

The patient page records with Chromium's fake camera and microphone (the filmed hand-to-mouth
clip and espeak-ng speech, as the browser tests do) and sends the check-in for a second
patient (`--phone-patient`), so the demo patient's history stays as `make demo` made it.
PNGs are reduced to a 256-colour palette to stay small.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from schizodot import samples, stack  # noqa: E402
from schizodot.dev_identity import DevIssuer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def small_png(path: Path, colours: int = 256) -> None:
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(path, optimize=True)


def shot(page, path: Path, *, full_page: bool = False, height: int | None = None) -> None:
    if height is not None:
        width = page.viewport_size["width"]
        page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width, "height": height}, full_page=True)
    else:
        page.screenshot(path=str(path), full_page=full_page)
    small_png(path)
    print(f"{path} {path.stat().st_size // 1024} KiB")


def wait_for_plots(page, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while page.evaluate("document.querySelectorAll('[data-drawn]').length") < int(
            page.evaluate("document.body.dataset.plots || 0")):
        if time.monotonic() > deadline:
            raise TimeoutError("plots not drawn")
        time.sleep(0.2)


def fake_media(folder: Path) -> dict[str, Path]:
    text = "Good morning. I slept quite well. I am taking my tablet now, with a glass of water."
    clip = samples.checkin_video(folder / "hand.mp4", seconds=6.0, width=480, height=360, fps=15, text=text,
                                 with_hand=True)
    y4m = folder / "hand.y4m"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-an", "-pix_fmt", "yuv420p", str(y4m)],
                   check=True)
    return {"video": y4m, "audio": samples.speech_wav(folder / "speech.wav", text, sample_rate=48000)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patient-id", default="demo-patient-001")
    parser.add_argument("--phone-patient", default="demo-patient-002")
    parser.add_argument("--state-dir", type=Path, default=stack.DEFAULT_STATE_DIR)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    config = stack.StackConfig.from_json((args.state_dir / "config.json").read_text())
    issuer = DevIssuer(config.state_dir)
    import httpx

    clinician = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    link = httpx.post(f"{config.api_url}/api/v1/patient-links", headers=clinician, timeout=30,
                      json={"patient_id": args.phone_patient}).json()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as driver:
        media = fake_media(Path(tmp))
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={media['video']}",
            f"--use-file-for-fake-audio-capture={media['audio']}"])
        # the patient's phone
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = phone.new_page()
        page.goto(link["url"])
        page.wait_for_selector("#screen-intro:not([hidden])")
        shot(page, args.out / "patient-intro.png", full_page=True)
        page.click("#start-camera")
        page.wait_for_selector("#screen-record:not([hidden])")
        page.click("#rec-start")
        time.sleep(1.0)
        page.click("#next-step")
        time.sleep(1.0)
        shot(page, args.out / "patient-recording.png")
        while page.is_visible("#next-step"):
            time.sleep(0.6)
            page.click("#next-step")
        time.sleep(0.6)
        page.click("#rec-stop")
        page.wait_for_selector("#screen-review:not([hidden])")
        page.click("#send")
        page.wait_for_selector("#screen-done:not([hidden])", timeout=180000)
        shot(page, args.out / "patient-thank-you.png")
        phone.close()
        # the clinician's console, signed in by the login link `make demo` prints
        desk = browser.new_context(viewport={"width": 1200, "height": 900})
        page = desk.new_page()
        page.goto(f"{config.console_url}/login#token={issuer.mint('dev-clinician')}")
        page.wait_for_url(f"{config.console_url}/")
        shot(page, args.out / "console-patients.png", height=420)
        page.goto(f"{config.console_url}/patients/{args.patient_id}")
        wait_for_plots(page)
        shot(page, args.out / "console-patient.png", height=2300)
        latest = page.locator("a[href*='/checkins/']").first.get_attribute("href")
        print("check-in page:", latest)
        page.goto(f"{config.results_url}{latest}")
        wait_for_plots(page)
        deadline = time.monotonic() + 20  # the video's first frame (wait_for_function would need eval: CSP)
        while page.evaluate("document.querySelector('video').readyState") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        shot(page, args.out / "console-checkin.png", height=2100)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
