"""A check-in from the patient's phone to the clinician's console, on the whole embedded stack.

A clinician of the browser tests' clinic issues a one-time link through the ingest API.
Chromium opens it with a fake camera and microphone playing a real filmed face that
brings a hand to the mouth, and espeak-ng speech. The page records the check-in through
MediaRecorder and sends it in parts straight to S3 (the stack's AWS server). The
pipeline analyses it (ingest, audio, vision, fusion, results). The patient sees
"Received" and then "Thank you", never a finding.

The clinician then signs in to the console with a login link (a real token, kept in
the session cookie) and sees it:
- the plots have data points, and the video and the evidence frame load;
- the clinic's rule raised an alert, delivered once, HMAC-signed, to the webhook
  receiver of the test;
- the acknowledgement with a note is in the audit trail;
- the CSV and the PDF download and parse;
- text injected into the check-in's metadata and the note is shown, never run.

A clinic whose receiver answers 500 gets retries with back-off, and then a
dead-lettered delivery, while its alert stays open and visible. A clinician of
another clinic who types the patient's id gets "not found". The timings of the
recorded check-in are written to `checkin-timings.json` beside the screenshots.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid

import httpx
import pypdf
import pytest

from schizodot.upload import upload_arguments
from shared.domain.job import Job
from tests.browser.conftest import launch_with_fake_devices
from tests.browser.test_console import XSS, points, wait_for_plots
from tests.browser.test_patient_page import check_contrast, record, wait_until
from tests.conftest import E2E_CLINIC, EHR_TEST_QUEUE, FAILING_CLINIC
from tests.webhooks import SECRET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hand_browser(playwright_driver, hand_media):
    browser = launch_with_fake_devices(playwright_driver, hand_media)
    yield browser
    browser.close()


def token(stack, user: str, clinic: str) -> str:
    return stack.token(user, schizodot_clinic=clinic)


def auth(stack, user: str, clinic: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(stack, user, clinic)}"}


@pytest.fixture(scope="module")
def failing_checkin(running_stack, checkin_clip):
    """A check-in of the clinic whose webhook receiver answers 500, submitted first so that its
    alert's retries run while the browser records."""
    patient = f"patient-{uuid.uuid4().hex[:6]}"
    uploader = auth(running_stack, "dev-uploader", FAILING_CLINIC)
    with httpx.Client(timeout=60) as http:
        job = http.post(f"{running_stack.api}/api/v1/analyze", headers=uploader, json={
            "patient_id": patient, "filename": "c.mp4", "content_type": "video/mp4"}).json()
        uploaded = http.request(**upload_arguments(job, "c.mp4", checkin_clip.read_bytes(), "video/mp4", uploader))
        assert uploaded.status_code in (200, 201, 204), uploaded.text
    return patient, job["job_id"]


def sign_in(browser, stack, user: str, clinic: str, viewport=(1280, 900)):
    """A browser context signed in to the console through a login link, as `make demo` prints it."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(f"{stack.results_api}/console/login#token={token(stack, user, clinic)}")
    page.wait_for_url(f"{stack.results_api}/console/")
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["schizodot_session"]["httpOnly"] and cookies["schizodot_session"]["sameSite"] == "Strict"
    assert "#token" not in page.url
    return context, page, problems


def test_a_checkin_recorded_on_the_phone_reaches_the_console_with_its_alert(
        hand_browser, running_stack, webhook_receiver, failing_checkin, screenshots):
    stack = running_stack
    patient = f"patient-{uuid.uuid4().hex[:6]}"
    clinician = auth(stack, "dev-clinician", E2E_CLINIC)
    link = httpx.post(f"{stack.api}/api/v1/patient-links", headers=clinician, timeout=30, json={
        "patient_id": patient, "metadata": {"note": XSS},
        "options": {"thresholds": {"baseline_min_checkins": 2}}}).json()
    assert link["url"] == f"{stack.api}/checkin#token={link['token']}"

    # --- the patient's phone ----------------------------------------------------------------
    phone = hand_browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                     has_touch=True)
    page = phone.new_page()
    parts: list[str] = []
    declared: list[dict] = []
    page.on("request", lambda r: (parts.append(r.url) if r.method == "PUT" and "partNumber=" in r.url else None,
                                  declared.append(json.loads(r.post_data)) if r.method == "POST"
                                  and r.url.endswith("/api/v1/checkin/upload") else None))
    page.goto(link["url"])
    record(page)
    sent_at = time.monotonic()
    page.click("#send")
    page.wait_for_selector("#screen-received:not([hidden])", timeout=60000)
    received_at = time.monotonic()
    assert len(parts) >= 2  # sent in parts, straight to S3
    page.wait_for_selector("#screen-done:not([hidden])", timeout=240000)
    analysed_at = time.monotonic()
    assert "risk" not in page.text_content("body").lower()  # never the findings
    job = stack.job(link["job_id"])
    assert job["status"] == "completed" and job["patient_id"].startswith(f"{E2E_CLINIC}.")  # the clinic, in the key
    assert set(Job.from_item(job).pipeline.expected) == {"audio", "vision"}  # sound and picture both arrived
    used = httpx.post(f"{stack.api}/api/v1/checkin/upload", headers={"Authorization": f"Bearer {link['token']}"},
                      json={"content_type": "video/webm", "size": 10}, timeout=30)
    assert used.status_code == 401  # the link's one recording is in
    phone.close()

    # --- the clinician's console -------------------------------------------------------------
    context, console, problems = sign_in(hand_browser, stack, "dev-clinician", E2E_CLINIC)
    console.goto(f"{stack.results_api}/console/?q={patient}")
    assert console.locator("table.patients tbody th[scope=row]").all_text_contents() == [patient]
    console.click(f"table.patients a[href$='/patients/{patient}']")
    console.wait_for_selector("table tbody a[href*='/checkins/']")
    shown_at = time.monotonic()
    assert wait_for_plots(console) >= 4  # risk, expressivity and markers
    assert points(console, "plot-risk") == 1 and points(console, "plot-expressivity") == 1
    assert "All times in Europe/Berlin" in console.text_content("#clinic-zone")

    # the clinic's rule raised an alert on this check-in, sent once, signed, to its receiver
    deadline = time.monotonic() + 60
    while not [r for r in webhook_receiver.at(f"/hooks/{E2E_CLINIC}")
               if json.loads(r.body)["data"]["patient_id"] == patient]:
        assert time.monotonic() < deadline, "the alert did not reach the webhook receiver"
        time.sleep(0.5)
    sent = [r for r in webhook_receiver.at(f"/hooks/{E2E_CLINIC}") if json.loads(r.body)["data"]["patient_id"] == patient]
    alert = sent[0].verified(SECRET)["data"]
    assert len(sent) == 1 and alert["rule"] == "risk" and alert["job_id"] == link["job_id"]
    assert alert["console_url"] == f"{stack.results_api}/console/patients/{patient}#alert-{alert['alert_id']}"

    # the check-in: video, evidence frame, the options it was given, free text shown as text
    console.click(f"a[href$='/checkins/{link['job_id']}']")
    wait_for_plots(console)
    deadline = time.monotonic() + 30
    while console.evaluate("document.querySelector('video').readyState") < 1:
        assert time.monotonic() < deadline, "the video did not load"
        time.sleep(0.2)
    frames = console.locator(".frames img")
    assert frames.count() >= 1
    frames.first.scroll_into_view_if_needed()
    wait_until(console, "[...document.querySelectorAll('.frames img')].every(i => i.naturalWidth > 0)", 30)
    assert "2 (set on this check-in)" in console.text_content("dl.options")
    assert XSS in console.text_content("dl.metadata") and console.evaluate("window.__xss") is None
    console.screenshot(path=str(screenshots / "e2e-console-checkin.png"), full_page=True)
    check_contrast(console)

    # acknowledge the alert with a note, from the keyboard; it is in the audit trail
    console.goto(f"{stack.results_api}/console/patients/{patient}")
    card = console.locator(f"#alert-{alert['alert_id']}")
    deadline = time.monotonic() + 30
    while "webhook delivered" not in card.text_content():
        assert time.monotonic() < deadline, card.text_content()
        console.reload()
        card = console.locator(f"#alert-{alert['alert_id']}")
    card.locator("textarea").fill("Phoned the patient: doing fine. " + XSS)
    card.locator("textarea").press("Tab")
    console.keyboard.press("Enter")
    console.wait_for_url(f"**/console/patients/{patient}#alert-{alert['alert_id']}")
    card = console.locator(f"#alert-{alert['alert_id']}")
    assert "Acknowledged by Dr Dev Clinician" in card.text_content() and XSS in card.locator("q.note").text_content()
    assert console.evaluate("window.__xss") is None
    trail = httpx.get(f"{stack.results_api}/api/v1/audit", params={"patient_id": patient, "limit": 100},
                      headers=auth(stack, "dev-admin", E2E_CLINIC), timeout=30).json()["records"]
    actions = [(r["action"], r["actor"]) for r in trail]
    assert ("checkin.link_issued", "dev-clinician") in actions and ("console.patient_view", "dev-clinician") in actions
    acks = [r for r in trail if r["action"] == "console.alert_acknowledge"]
    assert len(acks) == 1 and acks[0]["detail"]["alert_id"] == alert["alert_id"] and acks[0]["outcome"] == "success"
    assert patient not in json.dumps(trail)  # pseudonyms only

    # exports
    with console.expect_download() as download:
        console.click("text=Download history (CSV)")
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert [r["job_id"] for r in rows] == [link["job_id"]] and rows[0]["patient_id"] == patient
    # the transcript is on by default, so the rate is counted in its words (syllable nuclei without one)
    rate = [c for c in rows[0] if c in ("speech_rate [words per min]", "speech_rate [syllables per min]")]
    assert len(rate) == 1 and rows[0][rate[0]]
    with console.expect_download() as download:
        console.click("text=Download report (PDF)")
    report = pypdf.PdfReader(download.value.path())
    assert len(report.pages) == 1 and patient in report.pages[0].extract_text()

    # the dosing review: the check-in waits in the queue; T from the keyboard clears it
    console.goto(f"{stack.results_api}/console/review")
    assert console.locator(f"table.queue a[href$='/checkins/{link['job_id']}/review']").count() == 1
    review_page = f"{stack.results_api}/console/patients/{patient}/checkins/{link['job_id']}/review"
    opened = time.monotonic()
    console.goto(review_page)
    console.keyboard.press("t")
    console.wait_for_url(lambda u: u != review_page, timeout=30000)
    console.wait_for_load_state("domcontentloaded")
    review_s = time.monotonic() - opened
    assert console.locator(f"a[href$='/checkins/{link['job_id']}/review']").count() == 0  # off the queue
    console.goto(f"{stack.results_api}/console/patients/{patient}/checkins/{link['job_id']}")
    assert "confirmed by a reviewer of the video" in console.text_content("#dosing-status")
    with console.expect_download() as download:
        console.goto(f"{stack.results_api}/console/patients/{patient}")
        console.click("text=Download history (CSV)")
    [row] = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert row["dosing_review"] == "taken" and row["intake_source"] == "verified_by_review"
    with console.expect_download() as download:
        console.click("text=Download report (PDF)")
    assert "reviewed on video: taken" in pypdf.PdfReader(download.value.path()).pages[0].extract_text()
    kept = httpx.get(f"{stack.results_api}/api/v1/patients/{patient}/adherence", params={"days": 30},
                     headers=clinician, timeout=30).json()
    assert kept["counts"]["verified_by_review"] == 1 and kept["streak"]["verified"] == 1
    ehr = stack.client("sqs")
    inbox = ehr.get_queue_url(QueueName=EHR_TEST_QUEUE)["QueueUrl"]
    administrations, deadline = [], time.monotonic() + 30
    while not administrations:
        assert time.monotonic() < deadline, "no MedicationAdministration reached the EHR"
        for message in ehr.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []):
            event = json.loads(message["Body"])
            if event["type"] == "org.schizodot.dosing.reviewed.v1" and event["subject"] == link["job_id"]:
                administrations += [e["resource"] for e in event["data"]["entry"]]
    assert administrations[0]["resourceType"] == "MedicationAdministration"
    assert administrations[0]["status"] == "completed"
    assert administrations[0]["subject"]["identifier"]["value"] == patient
    trail = httpx.get(f"{stack.results_api}/api/v1/audit", params={"patient_id": patient, "limit": 100},
                      headers=auth(stack, "dev-admin", E2E_CLINIC), timeout=30).json()["records"]
    reviews = [r for r in trail if r["action"] == "dosing.review"]
    assert len(reviews) == 1 and reviews[0]["actor"] == "dev-clinician" and reviews[0]["detail"]["verdict"] == "taken"
    print(f"scripted dosing review of one check-in, page open to the next page: {review_s:.2f} s")
    assert problems == []
    context.close()

    media = Job.from_item(job).pipeline.media or {}
    timings = {"recording_s": media["duration_seconds"], "video": f"{media.get('width')}x{media.get('height')}",
               "upload_s": round(received_at - sent_at, 1), "analysis_s": round(analysed_at - received_at, 1),
               "send_to_console_s": round(shown_at - sent_at, 1), "recording_bytes": declared[0]["size"],
               "parts": len(parts)}
    (screenshots / "checkin-timings.json").write_text(json.dumps(timings, indent=2))
    print("check-in timings:", timings)


def test_a_receiver_that_answers_500_gets_retries_and_the_alert_stays_open_and_visible(
        hand_browser, running_stack, webhook_receiver, failing_checkin, screenshots):
    stack = running_stack
    patient, job_id = failing_checkin
    assert stack.wait_for_job(job_id, timeout=240)["status"] == "completed"
    path = f"/hooks/{FAILING_CLINIC}"
    deadline = time.monotonic() + 90  # 3 receives, 2 to 4 s apart (RESULTS_ALERT_RETRY_*)
    while len([r for r in webhook_receiver.at(path) if json.loads(r.body)["data"]["patient_id"] == patient]) < 3:
        assert time.monotonic() < deadline, "the receiver was not retried"
        time.sleep(0.5)
    tries = [r for r in webhook_receiver.at(path) if json.loads(r.body)["data"]["patient_id"] == patient]
    assert len({r.headers["webhook-id"] for r in tries}) == 1  # one alert, retried: a receiver can drop repeats
    context, console, _ = sign_in(hand_browser, stack, "dev-clinician", FAILING_CLINIC)
    deadline = time.monotonic() + 30
    while True:
        console.goto(f"{stack.results_api}/console/alerts")
        cards = console.locator("article.alert", has_text=patient)
        text = cards.first.text_content() if cards.count() else ""
        if "dead lettered after 3 attempts" in text or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "webhook dead lettered after 3 attempts (last: the receiver answered HTTP 500)" in " ".join(text.split())
    assert cards.first.locator("textarea").count() == 1  # still open: a clinician acknowledges it
    console.screenshot(path=str(screenshots / "e2e-console-alert-undelivered.png"), full_page=True)
    context.close()


def test_a_clinician_of_another_clinic_who_types_the_patients_id_gets_not_found(
        hand_browser, running_stack, failing_checkin):
    patient, _ = failing_checkin
    context, console, _ = sign_in(hand_browser, running_stack, "dev-clinician", "dev-clinic")
    theirs = console.goto(f"{running_stack.results_api}/console/patients/{patient}")
    nobody = console.goto(f"{running_stack.results_api}/console/patients/patient-nobody")
    assert theirs.status == nobody.status == 404 and console.text_content("h1") == "Not found"
    console.goto(f"{running_stack.results_api}/console/?q={patient}")
    assert console.locator("table.patients tbody th[scope=row]").count() == 0
    context.close()
