"""The clinician console in a real browser, mounted on the results API with real tokens
and the session cookie, on results shaped as the pipeline stores them (a history long
enough for baselines): plots drawn with data points, the video and the evidence frames
loaded through short-lived presigned GETs from S3 (moto's server), free text escaped,
the CSV and PDF downloaded and parsed back, an alert acknowledged with a note from the
keyboard. (test_checkin_to_console.py runs the whole pipeline on the embedded stack.)"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pypdf
import pytest

from schizodot import samples
from services.results.alerts import AlertService
from services.results.console.tests.fakes import COOKIE, Console
from shared.aws.clients import sync_client
from tests.browser.contract_items import as_stored, history
from tests.browser.servers import BackgroundServer
from tests.browser.test_patient_page import check_contrast

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def run(coroutine):
    """asyncio.run from a worker thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class NoQueue:
    async def send(self, event):
        pass


@pytest.fixture(scope="module")
def console_site(aws_server, fake_media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console-media")
    console = Console(tmp_path_factory.mktemp("console-identity"), endpoint=aws_server.aws_endpoint_url)
    north = history("patient-101", "clinic-north", 8, risks=["low"] * 7 + ["high"], metadata={"note": XSS},
                    transcript="Honestly there is no point going on some days, but I took my tablet.",
                    flags=[{"phrase": "no point going on", "category": "hopelessness", "start": 1.3}])
    others = history("patient-102", "clinic-north", 5, statuses=["compliant"] * 5)
    south = history("patient-900", "clinic-south", 3)
    run(console.add(north + others + south))
    service = AlertService(console.alerts, console.roster, console.clinics, NoQueue())
    read = as_stored(north)
    run(service.on_result("clinic-north", read[-1], list(reversed(read[:-1]))))

    # the latest check-in's video and evidence frames, as the pipeline stores them
    s3 = sync_client(aws_server, "s3")
    latest = north[-1]
    video = samples.checkin_video(folder / "checkin.webm", seconds=4.0, width=320, height=240, fps=15)
    s3.put_object(Bucket=aws_server.bucket, Key=latest["s3_key"], Body=video.read_bytes(), ContentType="video/webm")
    for step in latest["results"]["compliance"]["steps"]:
        if step["evidence_frame"]:
            frame = folder / f"{step['step']}.jpg"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", str(step["first_seen_s"] or 0),
                            "-i", str(fake_media["mp4"]), "-frames:v", "1", str(frame)], check=True, timeout=60)
            s3.put_object(Bucket=aws_server.bucket, Key=step["evidence_frame"], Body=frame.read_bytes(),
                          ContentType="image/jpeg")

    @asynccontextmanager
    async def app_factory():
        yield console.app

    with BackgroundServer(app_factory) as server:
        yield server, console, north


def session_cookie(server_url: str, console: Console, user: str = "north") -> dict:
    """A signed-in clinician's session cookie (the id of a server-side session), as /console/login sets it."""
    return {"name": COOKIE, "value": run(console.session(user)), "domain": urlsplit(server_url).hostname,
            "path": "/console", "httpOnly": True, "sameSite": "Strict"}


def watched_page(browser, server_url: str, console: Console, user: str = "north"):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_cookies([session_cookie(server_url, console, user)])  # downloads carry it too
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"outside request: {r.url}")
            if urlsplit(r.url).hostname not in ("127.0.0.1", None) and not r.url.startswith(("data:", "blob:"))
            else None)
    return context, page, problems


def wait_for_plots(page, timeout: float = 30) -> int:
    """Every figure on the page drawn by plotly.js; returns how many."""
    deadline = time.monotonic() + timeout
    while True:
        expected = page.evaluate("document.body.dataset.plots")
        drawn = page.evaluate("document.querySelectorAll('[data-drawn]').length")
        if expected is not None and drawn == int(expected):
            return drawn
        if time.monotonic() > deadline:
            raise AssertionError(f"{drawn} of {expected} plots drawn")
        time.sleep(0.2)


def points(page, plot_id: str) -> int:
    return page.evaluate(f"document.querySelectorAll('#{plot_id} .scatterlayer .point, #{plot_id} .barlayer .point')"
                         ".length")


def test_the_console_shows_the_clinics_patients_with_plots_that_have_data(browser, console_site, screenshots):
    server, console, north = console_site
    context, page, problems = watched_page(browser, server.url, console)
    page.goto(f"{server.url}/console/")
    rows = page.locator("table.patients tbody th[scope=row]").all_text_contents()
    assert rows == ["patient-101", "patient-102"]
    assert page.text_content("#clinic-zone") == "All times in Europe/Berlin (CET)"
    page.screenshot(path=str(screenshots / "console-patients.png"), full_page=True)
    check_contrast(page)
    page.fill("#q", "102")
    page.press("#q", "Enter")
    page.wait_for_url("**q=102**")
    assert page.locator("table.patients tbody th[scope=row]").all_text_contents() == ["patient-102"]

    page.goto(f"{server.url}/console/patients/patient-101")
    drawn = wait_for_plots(page)
    assert drawn >= 8  # risk, expressivity and one per marker with data
    assert points(page, "plot-risk") == 8
    assert page.evaluate("document.getElementById('plot-risk').data[0].y.join(',')") == "0,0,0,0,0,0,0,2"
    assert points(page, "plot-expressivity") >= 8
    assert page.evaluate("[...document.querySelectorAll('#plot-expressivity path.js-fill')]"
                         ".some(p => (p.getAttribute('d') || '').length > 10)")  # the baseline band is drawn
    assert page.locator("table.calendar td.day-unverifiable").count() == 8
    page.screenshot(path=str(screenshots / "console-patient.png"), full_page=True)
    assert problems == []
    context.close()


def test_the_checkin_page_loads_the_video_and_evidence_frames_and_escapes_free_text(browser, console_site,
                                                                                   screenshots):
    server, console, north = console_site
    latest = north[-1]
    context, page, problems = watched_page(browser, server.url, console)
    page.goto(f"{server.url}/console/patients/patient-101/checkins/{latest['job_id']}")
    wait_for_plots(page)
    assert points(page, "plot-timeline") == 24 and points(page, "plot-blendshapes") == 5
    deadline = time.monotonic() + 20
    while page.evaluate("document.querySelector('video').readyState") < 1:
        assert time.monotonic() < deadline, "the video did not load"
        time.sleep(0.2)
    assert page.evaluate("document.querySelector('video').duration") == pytest.approx(4.0, abs=0.3)
    frames = page.locator(".frames img")
    assert frames.count() == 3
    for index in range(3):
        frames.nth(index).scroll_into_view_if_needed()
    deadline = time.monotonic() + 20
    while page.evaluate("[...document.querySelectorAll('.frames img')].filter(i => i.naturalWidth > 0).length") < 3:
        assert time.monotonic() < deadline, "the evidence frames did not load"
        time.sleep(0.2)
    assert page.evaluate("window.__xss") is None
    assert XSS in page.text_content("dl.metadata")  # shown as text, not run
    assert page.text_content(".transcript mark") == "no point going on"
    assert "no validated speech-emotion model is configured" in page.text_content("table.not-assessed")
    # the answers one under another: the clinic's question, the transcript and its language, markers with baseline
    answers = page.locator("article.answer")
    assert answers.locator("h3").all_text_contents() == [
        "1. How has your mood been since your last check-in?",
        "2. Did you take your medication as prescribed, or did you miss any doses?"]
    said = [item["transcript"]["text"] for item in latest["results"]["answers"]["items"]]
    assert answers.nth(0).locator("q").text_content() == said[0]
    assert "(language en)" in answers.nth(1).locator(".answer-transcript").text_content()
    latency = answers.nth(1).locator("tr", has_text="Response latency").locator("td").all_text_contents()
    assert latency[:3] == ["2.9", "s", "2.712 ± 0.074 (4 check-ins)"]
    assert "MATTR needs at least 10" in answers.nth(0).locator("tr", has_text="MATTR").text_content()
    assert page.text_content("#transcript-language") == "en (Whisper p 0.97)"
    page.screenshot(path=str(screenshots / "console-checkin.png"), full_page=True)
    check_contrast(page)
    assert problems == []
    context.close()


def test_csv_and_pdf_download_and_parse(browser, console_site, tmp_path):
    server, console, north = console_site
    context, page, problems = watched_page(browser, server.url, console)
    page.goto(f"{server.url}/console/patients/patient-101")
    with page.expect_download() as download:
        page.click("text=Download history (CSV)")
    path = tmp_path / "history.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert download.value.suggested_filename == "patient-101-history.csv"
    assert len(rows) == 8 and "speech_rate [syllables per min]" in rows[0]
    assert [r["job_id"] for r in rows] == [i["job_id"] for i in north]
    with page.expect_download() as download:
        page.click("text=Download report (PDF)")
    path = tmp_path / "report.pdf"
    download.value.save_as(path)
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 1 and "patient-101" in reader.pages[0].extract_text()
    assert {r["action"] for r in console.audit_records()} >= {"console.export_csv", "console.export_pdf"}
    assert problems == []
    context.close()


def test_an_alert_is_acknowledged_with_a_note_that_is_shown_escaped(browser, console_site, screenshots):
    server, console, north = console_site
    context, page, problems = watched_page(browser, server.url, console)
    page.goto(f"{server.url}/console/alerts")
    cards = page.locator("article.alert")
    assert cards.count() == 3  # risk high, decline from baseline, transcript flag
    first = cards.first
    alert_id = first.get_attribute("id").removeprefix("alert-")
    page.screenshot(path=str(screenshots / "console-alerts.png"), full_page=True)
    first.locator("textarea").fill(XSS)
    first.locator("textarea").press("Tab")
    page.keyboard.press("Enter")  # the Acknowledge button, from the keyboard
    page.wait_for_url("**/console/alerts#alert-*")
    assert page.locator("article.alert").count() == 2
    page.goto(f"{server.url}/console/patients/patient-101#alert-{alert_id}")
    wait_for_plots(page)
    done = page.locator(f"#alert-{alert_id}")
    assert "Acknowledged by Dr Dev Clinician" in done.text_content() and XSS in done.locator("q.note").text_content()
    assert page.evaluate("window.__xss") is None
    stored = run(console.alerts.get("clinic-north", alert_id))
    assert stored.state == "acknowledged" and stored.note == XSS
    assert any(r["action"] == "console.alert_acknowledge" and r["detail"].get("alert_id") == alert_id
               for r in console.audit_records())
    assert problems == []
    context.close()


def test_another_clinics_patient_is_not_found(browser, console_site):
    server, console, _ = console_site
    context, page, problems = watched_page(browser, server.url, console)
    response = page.goto(f"{server.url}/console/patients/patient-900")
    assert response.status == 404 and page.text_content("h1") == "Not found"
    context.close()
