"""The console in Chromium: every page has 0 axe-core WCAG 2.1 A/AA violations, and a clinician
clears the "Dosing to review" queue with keystrokes (T; N and U with a reason), the next check-in
opening at once. The time from a review page opening to the next one is printed."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.browser.axe import violations
from tests.browser.test_console import console_site, run, session_cookie, wait_for_plots, watched_page  # noqa: F401

pytestmark = pytest.mark.slow


def test_every_console_page_has_no_axe_violations(browser, console_site):
    server, console, north = console_site
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # axe is injected
    context.add_cookies([session_cookie(server.url, console)])
    page = context.new_page()
    latest = north[-1]
    found = {}
    for path in ("/console/", "/console/alerts", "/console/patients/patient-101",
                 f"/console/patients/patient-101/checkins/{latest['job_id']}", "/console/review",
                 f"/console/patients/patient-101/checkins/{latest['job_id']}/review", "/console/patients/nobody-1",
                 "/console/login"):
        page.goto(f"{server.url}{path}")
        assert path == "/console/login" or urlsplit(page.url).path == path, page.url  # signed in: the page itself
        if page.evaluate("document.body.dataset.plots") is not None:
            wait_for_plots(page)
        found[path] = violations(page)
    context.close()
    assert found == {path: [] for path in found}


def test_a_clinician_clears_the_review_queue_with_keystrokes(browser, console_site):
    server, console, north = console_site
    run(console.add_jobs(north))
    context, page, problems = watched_page(browser, server.url, console)
    page.goto(f"{server.url}/console/review")
    waiting = page.locator("table.queue tbody tr").count()
    assert waiting >= 8
    page.click("#start-review")
    page.wait_for_url("**/review")
    timings, keys = [], ["t", "n", "u"]
    for number in range(waiting):
        opened = time.monotonic()
        url = page.url
        key = keys[number % 3]
        page.keyboard.press(key)
        if key != "t":
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
        page.wait_for_url(lambda u: u != url, timeout=15000)
        page.wait_for_load_state("domcontentloaded")
        timings.append(time.monotonic() - opened)
    assert "The queue is clear" in page.text_content("main")
    statuses = [((i.get("results") or {}).get("compliance") or {}).get("verification_status")
                for i in console.history.items.values() if i.get("clinic_id") == "clinic-north"
                and i["user_id"].endswith("patient-101")]
    assert {"verified_by_review", "not_taken", "unverifiable"} <= set(statuses)
    page.goto(f"{server.url}/console/patients/patient-101")
    assert "confirmed by a reviewer of the video" in page.text_content("table.by-source")
    assert problems == []
    context.close()
    print(f"scripted review of one check-in, page open to the next check-in: median "
          f"{sorted(timings)[len(timings) // 2]:.2f} s (of {len(timings)}: {', '.join(f'{t:.2f}' for t in timings)})")
