"""The patient check-in page in a real browser: Chromium's fake camera and microphone
(a real face video and espeak-ng speech) record through MediaRecorder, and the
recording goes through the ingest API to S3 (moto's server over HTTP) as a multipart
upload, through a dropped connection that resumes, and through one that cannot resume.

The page and its API are the ingest service's, composed as services/ingest/main.py
composes them, with real one-time links issued through the API and checked by
shared.identity.auth. Parts are 32 KiB (the emulator's 5 MiB floor is lowered) so that a few
seconds of video make several parts. (test_checkin_to_console.py sends a recording
through the whole pipeline of the embedded stack.)
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.ingest.patient.tests.app import ingest_site, update_job
from shared.aws.clients import sync_client
from tests.browser.axe import violations
from tests.browser.servers import BackgroundServer

PART = 32 * 1024
STEP_SECONDS = 0.7  # time on each prompt while recording


@pytest.fixture(scope="module")
def ingest(aws_server, tmp_path_factory):
    import moto.s3.models as s3_models

    saved = s3_models.S3_UPLOAD_PART_MIN_SIZE
    s3_models.S3_UPLOAD_PART_MIN_SIZE = PART
    state_dir = tmp_path_factory.mktemp("page-identity")
    sites = []

    @asynccontextmanager
    async def app_factory():
        async with ingest_site(aws_server, state_dir, part_bytes=PART, max_bytes=400 * PART) as site:
            sites.append(site)
            yield site.app

    with BackgroundServer(app_factory) as server:
        yield server, sites[0]
    s3_models.S3_UPLOAD_PART_MIN_SIZE = saved


def new_checkin(settings, ingest) -> tuple[str, str, str]:
    """A check-in and its one-time link, issued through the API as a clinician would: (job id, media key, token)."""
    server, site = ingest
    response = httpx.post(f"{server.url}/api/v1/patient-links", headers=site.auth("dev-clinician"), timeout=30,
                          json={"patient_id": "patient-" + uuid.uuid4().hex[:6]})
    assert response.status_code == 201, response.text
    link = response.json()
    item = sync_client(settings, "dynamodb").get_item(TableName=settings.jobs_table, ConsistentRead=True,
                                                      Key={"job_id": {"S": link["job_id"]}})["Item"]
    return link["job_id"], item["s3_key"]["S"], link["token"]


def record(page, screenshots=None) -> dict:
    """Go through the whole script on camera, as a patient would, with the keyboard where it is natural."""
    page.wait_for_selector("#screen-intro:not([hidden])")
    page.focus("#start-camera")
    page.keyboard.press("Enter")
    page.wait_for_selector("#screen-record:not([hidden])")
    wait_until(page, "document.getElementById('live').videoWidth > 0")
    page.click("#rec-start")
    steps = 0
    while page.is_visible("#next-step"):
        steps += 1
        if steps == 2 and screenshots:
            page.screenshot(path=str(screenshots / "patient-recording.png"))
        time.sleep(STEP_SECONDS)
        page.click("#next-step")
    time.sleep(STEP_SECONDS)
    assert page.text_content("#prompt-text") == "Open your mouth to show it is empty."
    page.click("#rec-stop")
    page.wait_for_selector("#screen-review:not([hidden])")
    wait_until(page, "document.getElementById('review').readyState >= 1")
    return {"steps": steps + 1}


def wait_until(page, expression: str, timeout: float = 10) -> None:
    """Poll a page expression (Playwright's wait_for_function evaluates strings, which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {expression}")
        time.sleep(0.1)


def parts_sent(requests: list[str]) -> list[int]:
    return [int(parse_qs(urlsplit(url).query)["partNumber"][0]) for url in requests if "partNumber=" in url]


def stored_object(settings, key: str, tmp_path) -> dict:
    body = sync_client(settings, "s3").get_object(Bucket=settings.bucket, Key=key)
    path = tmp_path / "uploaded.webm"
    path.write_bytes(body["Body"].read())
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True, text=True, check=True).stdout)
    return {"content_type": body["ContentType"], "size": path.stat().st_size, "probe": probe}


def test_a_patient_records_and_sends_a_checkin_through_a_dropped_connection(browser, ingest, aws_server,
                                                                             screenshots, tmp_path):
    server, _ = ingest
    job_id, key, token = new_checkin(aws_server, ingest)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, bypass_csp=True)  # axe-core is injected
    page = context.new_page()
    puts: list[str] = []
    api_calls: list[str] = []
    outside: list[str] = []
    drop = {"on": False, "seen": 0}
    declared: list[dict] = []
    page.on("request", lambda r: (puts.append(r.url) if r.method == "PUT" else None,
                                  declared.append(json.loads(r.post_data)) if r.url.endswith("/api/v1/checkin/upload")
                                  else None,
                                  api_calls.append(urlsplit(r.url).path) if "/api/v1/checkin/" in r.url else None,
                                  outside.append(r.url) if urlsplit(r.url).hostname not in ("127.0.0.1", None)
                                  and not r.url.startswith(("blob:", "data:")) else None))

    def part_route(route):
        number = int(parse_qs(urlsplit(route.request.url).query).get("partNumber", ["0"])[0])
        if route.request.method == "PUT" and (number == 3 and drop["seen"] == 0 or drop["on"]):
            drop["on"] = True
            drop["seen"] += 1
            route.abort("internetdisconnected")
        else:
            route.continue_()
    page.route(lambda url: "uploadId=" in url, part_route)

    page.goto(f"{server.url}/checkin#token={token}")
    page.wait_for_selector("#screen-intro:not([hidden])")
    assert "#token" not in page.url  # the token leaves the address bar
    assert page.locator("#intro-prompts li").all_text_contents() == [
        "How has your mood been since your last check-in?",
        "Did you take your medication as prescribed, or did you miss any doses?",
        "Have you noticed any side effects?", "How have you been sleeping?",
        "Is there anything else you would like your care team to know?"]
    assert page.locator("#intro-dosing li").count() == 4
    page.screenshot(path=str(screenshots / "patient-intro.png"), full_page=True)
    check_contrast(page)
    assert violations(page) == []

    recorded = record(page, screenshots)
    assert recorded["steps"] == 9
    info = page.text_content("#review-info")
    assert info.startswith("Length 0:0") or info.startswith("Length 0:1")
    page.screenshot(path=str(screenshots / "patient-review.png"), full_page=True)
    assert violations(page) == []
    page.click("#send")
    wait_until(page, "document.body.dataset.upload === 'paused'", 30)
    context.set_offline(True)  # the phone has lost its network
    size = declared[0]["size"]
    timeline = declared[0]["timeline"]  # when each step was shown, sent with the recording
    assert [(e["step_id"], e["kind"]) for e in timeline] == [
        ("mood", "prompt"), ("medication", "prompt"), ("side_effects", "prompt"), ("sleep", "prompt"),
        ("anything_else", "prompt"), ("show_pill", "dosing"), ("place_on_tongue", "dosing"),
        ("close_mouth", "dosing"), ("show_empty", "dosing")]
    times = [e["shown_at_ms"] for e in timeline]
    assert times[0] < 500 and all(later - earlier >= 0.6 * STEP_SECONDS * 1000
                                  for earlier, later in zip(times, times[1:])), times
    item = sync_client(aws_server, "dynamodb").get_item(TableName=aws_server.jobs_table, ConsistentRead=True,
                                                        Key={"job_id": {"S": job_id}})["Item"]
    kept = item["metadata"]["M"]["pipeline"]["M"]["timeline"]["L"]
    assert [int(e["M"]["shown_at_ms"]["N"]) for e in kept] == times  # kept on the check-in
    assert declared[0]["content_type"].startswith("video/webm") and size > 4 * PART, declared
    assert "The connection dropped" in page.text_content("#upload-problem-text")
    percent = page.eval_on_selector("#upload-progress", "p => p.value")
    assert 0 < percent < 100
    held = sync_client(aws_server, "s3").list_multipart_uploads(Bucket=aws_server.bucket, Prefix=key)["Uploads"]
    upload_id = held[0]["UploadId"]
    stored_parts = sync_client(aws_server, "s3").list_parts(Bucket=aws_server.bucket, Key=key, UploadId=upload_id)
    assert [p["PartNumber"] for p in stored_parts["Parts"]] == [1, 2]
    page.screenshot(path=str(screenshots / "patient-upload-interrupted.png"), full_page=True)
    assert page.evaluate("""() => new Promise(r => { const q = indexedDB.open('schizodot-checkin');
        q.onsuccess = () => { const g = q.result.transaction('recordings').objectStore('recordings').count();
        g.onsuccess = () => r(g.result); }; })""") == 1  # kept on the device meanwhile

    drop["on"] = False
    context.set_offline(False)  # back online: the page carries on by itself
    page.wait_for_selector("#screen-received:not([hidden])", timeout=60000)
    sent = parts_sent(puts)
    total = -(-size // PART)
    # every part went to the ingest API (the upload proxy), none to the AWS server (issue 19, finding 1)
    assert {urlsplit(url).netloc for url in puts} == {urlsplit(server.url).netloc}, puts
    assert sent.count(1) == 1 and sent.count(2) == 1, sent  # what S3 had was not sent again
    assert sorted(set(sent)) == list(range(1, total + 1))
    assert "/api/v1/checkin/upload/resume" in api_calls
    page.screenshot(path=str(screenshots / "patient-received.png"), full_page=True)
    assert page.evaluate("""() => new Promise(r => { const q = indexedDB.open('schizodot-checkin');
        q.onsuccess = () => { const g = q.result.transaction('recordings').objectStore('recordings').count();
        g.onsuccess = () => r(g.result); }; })""") == 0  # removed once S3 has it all

    stored = stored_object(aws_server, key, tmp_path)
    assert stored["size"] == size and stored["content_type"] == "video/webm"
    kinds = {s["codec_type"] for s in stored["probe"]["streams"]}
    assert kinds == {"video", "audio"} and "webm" in stored["probe"]["format"]["format_name"]

    update_job(aws_server, job_id, status="processing", progress=45)
    wait_until(page, "document.getElementById('job-progress').value === 45", 15)
    update_job(aws_server, job_id, status="completed", progress=100,
               results={"risk_level": "high", "emotion_summary": "sad"})
    page.wait_for_selector("#screen-done:not([hidden])", timeout=15000)
    page.screenshot(path=str(screenshots / "patient-thank-you.png"), full_page=True)
    body = page.text_content("body").lower()
    assert "risk" not in body and "sad" not in body  # never the findings
    assert outside == []  # nothing from outside this machine
    context.close()


def test_an_upload_that_cannot_resume_says_so_and_keeps_the_recording_for_another_try(browser, ingest, aws_server,
                                                                                       screenshots, tmp_path):
    server, _ = ingest
    job_id, key, token = new_checkin(aws_server, ingest)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    drop = {"on": True}
    page.route(lambda url: "partNumber=2" in url,
               lambda route: route.abort("internetdisconnected") if drop["on"] else route.continue_())
    page.goto(f"{server.url}/checkin#token={token}")
    record(page)
    page.click("#send")
    wait_until(page, "document.body.dataset.upload === 'paused'", 30)
    s3 = sync_client(aws_server, "s3")
    upload_id = s3.list_multipart_uploads(Bucket=aws_server.bucket, Prefix=key)["Uploads"][0]["UploadId"]
    s3.abort_multipart_upload(Bucket=aws_server.bucket, Key=key, UploadId=upload_id)  # e.g. expired by a lifecycle rule
    drop["on"] = False
    page.click("#upload-retry")
    wait_until(page, "document.body.dataset.upload === 'cannot-resume'", 30)
    assert "We could not resume sending your recording. It is still saved on this device" in page.text_content(
        "#upload-problem-text")
    page.screenshot(path=str(screenshots / "patient-cannot-resume.png"), full_page=True)

    page.reload()  # another try later: the token is kept for this tab, the recording on the device
    page.wait_for_selector("#screen-saved:not([hidden])")
    assert "is saved on this device" in page.text_content("#saved-info")
    page.click("#send-saved")
    page.wait_for_selector("#screen-received:not([hidden])", timeout=60000)
    stored = stored_object(aws_server, key, tmp_path)
    assert {s["codec_type"] for s in stored["probe"]["streams"]} == {"video", "audio"}
    context.close()


def test_an_unknown_link_gets_the_plain_expired_or_used_message(browser, ingest, aws_server, screenshots):
    server, _ = ingest
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    # an unknown token: the page cannot tell unknown, expired and used apart, and says so in one message
    page.goto(f"{server.url}/checkin#token=expired-or-unknown")
    page.wait_for_selector("#screen-invalid:not([hidden])")
    assert page.text_content("#invalid-reason") == "This check-in link has expired or has already been used."
    page.screenshot(path=str(screenshots / "patient-expired-link.png"), full_page=True)
    page.goto(f"{server.url}/checkin")  # no token at all (a fresh tab)
    context.clear_cookies()
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.wait_for_selector("#screen-invalid:not([hidden])")
    assert "opens from the check-in link your clinic sent you" in page.text_content("#invalid-reason")

    job_id, key, token = new_checkin(aws_server, ingest)
    sync_client(aws_server, "s3").put_object(Bucket=aws_server.bucket, Key=key, Body=b"x" * 100)
    page = context.new_page()  # a fresh page: a new fragment alone would not reload the old one
    page.goto(f"{server.url}/checkin#token={token}")
    page.wait_for_selector("#screen-received:not([hidden])")  # used: it says what happened to the check-in
    context.close()


def test_a_browser_without_camera_permission_gets_instructions(browser_without_camera_permission, ingest, aws_server,
                                                               screenshots):
    server, _ = ingest
    _, _, token = new_checkin(aws_server, ingest)
    context = browser_without_camera_permission.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{server.url}/checkin#token={token}")
    page.click("#start-camera")
    page.wait_for_selector("#screen-camera-help:not([hidden])", timeout=20000)
    assert "did not allow this page to use the camera" in page.text_content("#camera-problem")
    assert "iPhone or iPad (Safari)" in page.text_content("#screen-camera-help")
    assert page.evaluate("document.activeElement.id") == "camera-help-title"  # focus moves to the new screen
    page.screenshot(path=str(screenshots / "patient-camera-denied.png"), full_page=True)
    context.close()


CONTRAST = """() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = el => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
                     if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
  const low = [];
  for (const el of document.querySelectorAll('h1, h2, h3, p, li, button, label, th, td, a, caption')) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(el.tagName + ' ' + el.textContent.slice(0, 30) + ' ' + ratio.toFixed(2));
  }
  const unnamed = [...document.querySelectorAll('button, input, textarea, progress')]
    .filter(el => el.offsetParent && !(el.labels && el.labels.length) && !el.textContent.trim() && !el.getAttribute('aria-label'));
  return {low, unnamed: unnamed.map(e => e.outerHTML)};
}"""


def check_contrast(page) -> None:
    """WCAG 2.1 AA basics on what is shown: 4.5:1 text contrast, every control named."""
    found = page.evaluate(CONTRAST)
    assert found == {"low": [], "unnamed": []}
