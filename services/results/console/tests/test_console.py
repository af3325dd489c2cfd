"""The console's pages, exports, sign-in and acknowledgement over HTTP, mounted on the results API with
real tokens and the session cookie (shared.identity.auth), on results shaped as the pipeline stores them."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import urllib.parse

import pypdf
import pytest
from fastapi.testclient import TestClient

from services.results.alerts import AlertService
from services.results.console.tests.fakes import COOKIE, Console, stored
from tests.browser.contract_items import as_stored, history

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


class NoQueue:
    async def send(self, event):
        pass


@pytest.fixture
def console(tmp_path):
    c = Console(tmp_path)
    north = history("patient-101", "clinic-north", 8, risks=["low"] * 7 + ["high"], metadata={"note": XSS},
                    transcript="Honestly there is no point going on some days, but I took my tablet.",
                    flags=[{"phrase": "no point going on", "category": "hopelessness", "start": 1.3}])
    other = history("patient-102", "clinic-north", 3, statuses=["compliant"] * 3)
    south = history("patient-900", "clinic-south", 3)
    asyncio.run(c.add(north + other + south))
    service = AlertService(c.alerts, c.roster, c.clinics, NoQueue())
    for items in (north, south):
        read = as_stored(items)
        asyncio.run(service.on_result(items[0]["clinic_id"], read[-1], list(reversed(read[:-1]))))
    c.north, c.other, c.south = north, other, south
    return c


def test_the_patient_list_shows_only_the_clinics_patients_with_their_state(console):
    with TestClient(console.app) as http:
        page = http.get("/console/", headers=console.headers("north"))
        assert page.status_code == 200
        assert "patient-101" in page.text and "patient-102" in page.text and "patient-900" not in page.text
        assert "All times in Europe/Berlin (CET)" in page.text
        rows = re.findall(r'<th scope="row"><a href="/console/patients/([^"]+)">', page.text)
        assert rows == ["patient-101", "patient-102"]  # highest risk first
        assert "3 in a row taken" in page.text and "0 (last: could not be verified)" in page.text
        assert "Speech rate: notably lower than usual (worse)" in page.text
        assert "2026-11-15" in page.text and "CET" in page.text
        by_id = http.get("/console/?q=102&sort=patient&order=asc", headers=console.headers("north"))
        assert re.findall(r'<th scope="row"><a href="/console/patients/([^"]+)">', by_id.text) == ["patient-102"]
        ascending = http.get("/console/?sort=risk&order=asc", headers=console.headers("north"))
        assert re.findall(r'<th scope="row"><a href="/console/patients/([^"]+)">', ascending.text) == [
            "patient-102", "patient-101"]
        assert 'aria-sort="ascending"' in ascending.text
    assert [r["action"] for r in console.audit_records()] == ["console.patient_list"] * 3
    assert {r["actor"] for r in console.audit_records()} == {"dev-clinician"}


def test_only_clinicians_may_open_the_console(console):
    with TestClient(console.app) as http:
        assert http.get("/console/").status_code == 401
        assert http.get("/console/patients/patient-101/history.csv").status_code == 401
        assert http.get("/console/", headers=console.headers("uploader")).status_code == 403
        assert http.get("/console/", headers=console.headers("north-admin")).status_code == 200
        # a browser without a credential is sent to the sign-in page, whatever the path (existing or not)
        for path in ("/console/patients/patient-101", "/console/no/such/page"):
            page = http.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
            assert page.status_code == 303 and page.headers["location"] == f"/console/login?next={path}"


def test_another_clinics_patient_is_not_found_exactly_like_a_missing_one(console):
    with TestClient(console.app) as http:
        theirs = http.get("/console/patients/patient-900", headers=console.headers("north"))
        missing = http.get("/console/patients/patient-999", headers=console.headers("north"))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.text == missing.text
        job = console.south[0]["job_id"]
        for path in (f"/console/patients/patient-900/checkins/{job}", "/console/patients/patient-900/history.csv",
                     "/console/patients/patient-900/report.pdf", f"/console/patients/patient-900/checkins/{job}/video"):
            response = http.get(path, headers=console.headers("north"))
            assert response.status_code == 404 and response.text == missing.text, path
        # a check-in of our patient that belongs to another clinic's record is not found either
        stray = {**stored(console.south)[0], "user_id": "clinic-north.patient-101"}
        asyncio.run(console.history.save(stray))
        assert http.get(f"/console/patients/patient-101/checkins/{stray['job_id']}", headers=console.headers("north")).text == missing.text
        assert http.get("/console/patients/patient-900", headers=console.headers("south")).status_code == 200
    assert {r["outcome"] for r in console.audit_records() if r["clinic_id"] == "clinic-north"} == {"not_found"}


def test_the_patient_page_has_plots_with_data_and_the_adherence_calendar(console):
    with TestClient(console.app) as http:
        page = http.get("/console/patients/patient-101", headers=console.headers("north"))
    assert page.status_code == 200
    figures = {m.group(1): m.group(2) for m in re.finditer(
        r'<script type="application/json" data-plot="([^"]+)">(.*?)</script>', page.text, re.S)}
    assert "plot-risk" in figures and "plot-expressivity" in figures
    assert any(key.startswith("plot-speech_rate") for key in figures)
    import json
    risk = json.loads(figures["plot-risk"])
    assert risk["data"][0]["y"] == [0] * 7 + [2] and len(risk["data"][0]["x"]) == 8
    speech = json.loads(next(v for k, v in figures.items() if k.startswith("plot-speech_rate")))
    band = [t for t in speech["data"] if t.get("fill") == "tonexty"]
    assert band and len(band[0]["y"]) == 5  # a band once three earlier check-ins exist
    assert speech["layout"]["xaxis"]["title"]["text"] == "Check-in time (Europe/Berlin)"
    assert "Jitter: the voice was too quiet to measure jitter reliably" in page.text
    assert 'class="day day-unverifiable"' in page.text and "medication could not be verified" in page.text
    assert "Download history (CSV)" in page.text and "Download report (PDF)" in page.text
    assert [(r["action"], r["outcome"]) for r in console.audit_records()] == [("console.patient_view", "success")]
    assert "patient-101" not in str(console.audit_records())  # the trail names patients by pseudonym only
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_the_checkin_page_shows_every_finding_with_its_method_and_what_was_not_assessed(console):
    item = console.north[-1]
    with TestClient(console.app) as http:
        page = http.get(f"/console/patients/patient-101/checkins/{item['job_id']}", headers=console.headers("north"))
    assert page.status_code == 200
    text = page.text
    assert "Check-in of 2026-11-15 11:19 CET" in text
    assert f'src="/console/patients/patient-101/checkins/{item["job_id"]}/video"' in text
    assert "syllables per min" in text and "notably lower" in text and "z -6.0" in text
    assert "<mark>no point going on</mark>" in text
    assert "Speech emotion</th><td>no validated speech-emotion model is configured" in text
    assert "Pill steps of observed dosing</th><td>no pill detector is configured" in text
    assert "fer 25.10.3 tflite + face-api 1.7.15 (mean) (balanced recall 57% on FER2013 PrivateTest, n=3589)" in text
    assert 'data-plot="plot-timeline"' in text and 'data-plot="plot-blendshapes"' in text
    assert "/evidence/hand_to_mouth" in text and "speech rate 116 syllables per min" in text


def test_free_text_is_escaped_everywhere_it_is_shown(console):
    alert = asyncio.run(console.alerts.open_alerts("clinic-north"))[0]
    asyncio.run(console.alerts.acknowledge("clinic-north", alert.alert_id, XSS, XSS, "2026-11-16T10:00:00Z"))
    item = console.north[-1]
    with TestClient(console.app) as http:
        pages = [http.get(f"/console/patients/patient-101/checkins/{item['job_id']}", headers=console.headers("north")).text,
                 http.get("/console/patients/patient-101", headers=console.headers("north")).text,
                 http.get(f"/console/?q={urllib.parse.quote(XSS)}", headers=console.headers("north")).text]
    for text in pages:
        assert "<script>window" not in text and "<img src=x" not in text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in pages[0]  # job metadata
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in pages[1]  # the alert's note and who acknowledged it
    assert "&lt;img src=x onerror=" in pages[2]  # the search box echoes it escaped


def test_the_history_exports_as_csv_with_units_in_the_header(console):
    with TestClient(console.app) as http:
        response = http.get("/console/patients/patient-101/history.csv", headers=console.headers("north"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="patient-101-history.csv"' == response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 8 and rows[0]["job_id"] == console.north[0]["job_id"]  # oldest first
    assert float(rows[-1]["speech_rate [syllables per min]"]) == pytest.approx(115.5)
    assert rows[0]["checkin_time [Europe/Berlin]"] == "2026-11-01T10:30:00+01:00"
    assert rows[-1]["risk_level"] == "high" and rows[-1]["jitter [%]"] == ""  # not assessed: empty
    assert "facial_expressivity [blendshape activity (0-1)]" in rows[0]
    assert console.audit_records()[-1]["action"] == "console.export_csv"


def test_the_pdf_report_is_one_page_with_the_plots(console):
    with TestClient(console.app) as http:
        response = http.get("/console/patients/patient-101/report.pdf", headers=console.headers("north"))
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(response.content))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    for expected in ("patient-101", "North Clinic", "Europe/Berlin", "Risk level per check-in",
                     "Facial expressivity", "Speech rate (syllables per min)", "Open alerts: 3"):
        assert expected in text, expected
    assert reader.metadata.title == "SchizoDot report patient-101"


def test_media_are_short_lived_presigned_redirects(console):
    item = console.north[-1]
    base = f"/console/patients/patient-101/checkins/{item['job_id']}"
    with TestClient(console.app) as http:
        video = http.get(base + "/video", headers=console.headers("north"), follow_redirects=False)
        frame = http.get(base + "/evidence/hand_to_mouth", headers=console.headers("north"), follow_redirects=False)
        missing = http.get(base + "/evidence/pill_in_mouth", headers=console.headers("north"), follow_redirects=False)
        odd = http.get(base + "/evidence/..%2F..%2Fsecret", headers=console.headers("north"), follow_redirects=False)
    assert video.status_code == 303 and frame.status_code == 303
    assert urllib.parse.urlsplit(video.headers["location"]).path == f"/schizodot-media/{item['s3_key']}"
    assert "X-Amz-Expires=120" in video.headers["location"]
    assert f"/artifacts/{item['job_id']}/evidence/hand_to_mouth.jpg" in frame.headers["location"]
    assert missing.status_code == 404 and odd.status_code == 404
    media = [(r["action"], r["outcome"], r["detail"]) for r in console.audit_records() if r["action"].endswith("_get")]
    assert media[:3] == [("console.video_get", "success", {"media": "video"}),
                         ("console.evidence_get", "success", {"media": "evidence:hand_to_mouth"}),
                         ("console.evidence_get", "not_found", {"media": "evidence:pill_in_mouth"})]


def test_an_alert_is_acknowledged_with_a_note_from_this_site_only(console):
    alert = asyncio.run(console.alerts.open_alerts("clinic-north"))[0]
    path = f"/console/alerts/{alert.alert_id}/acknowledge"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with TestClient(console.app) as http:
        cross = http.post(path, content="note=ok", headers={**console.headers("north"), **form, "Origin": "https://evil.example"})
        assert cross.status_code == 403
        fetched = http.post(path, content="note=ok", headers={**console.headers("north"), **form, "Sec-Fetch-Site": "cross-site"})
        assert fetched.status_code == 403
        empty = http.post(path, content="note=", headers={**console.headers("north"), **form})
        assert empty.status_code == 422 and "Write a note" in empty.text
        theirs = http.post(path, content="note=mine", headers={**console.headers("south"), **form})
        assert theirs.status_code == 404
        done = http.post(path, content="note=" + urllib.parse.quote("Called the patient; appointment booked"),
                         headers={**console.headers("north"), **form, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                         follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == f"/console/patients/patient-101#alert-{alert.alert_id}"
    acknowledged = asyncio.run(console.alerts.get("clinic-north", alert.alert_id))
    assert acknowledged.state == "acknowledged" and acknowledged.note == "Called the patient; appointment booked"
    assert acknowledged.acknowledged_by == "Dr Dev Clinician"
    acks = [r for r in console.audit_records() if r["action"] == "console.alert_acknowledge"]
    assert [(r["outcome"], r["clinic_id"], r["detail"].get("alert_id")) for r in acks] == [
        ("not_found", "clinic-south", alert.alert_id), ("success", "clinic-north", alert.alert_id)]
    assert acks[-1]["patient_ref"].startswith("pt-") and acks[-1]["detail"]["note_chars"] == 38


def test_no_phi_is_served_when_the_audit_trail_fails(console):
    console.audit_store.failing = True
    with TestClient(console.app, raise_server_exceptions=False) as http:
        response = http.get("/console/patients/patient-101", headers=console.headers("north"))
    assert response.status_code == 503 and "patient-101" not in response.text


def test_the_console_serves_its_own_scripts(console):
    with TestClient(console.app) as http:
        plotly_js = http.get("/console/static/plotly.min.js")
        assert plotly_js.status_code == 200 and len(plotly_js.content) > 1_000_000
        assert http.get("/console/static/../router.py", headers=console.headers("north")).status_code == 404
        assert http.get("/console/static/router.py").status_code == 404
        page = http.get("/console/patients/patient-101", headers=console.headers("north"))
    assert not re.search(r'(src|href)="https?://', page.text)


def test_a_browser_signs_in_with_a_token_and_its_forms_carry_a_csrf_token(console):
    alert = asyncio.run(console.alerts.open_alerts("clinic-north"))[0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with TestClient(console.app) as http:
        page = http.get("/console/login?next=/console/patients/patient-101")
        assert page.status_code == 200 and 'name="token"' in page.text and "login.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        signed_in = http.post("/console/login", headers=form, follow_redirects=False, content="token="
                              + urllib.parse.quote(console.token("north")) + "&next=/console/patients/patient-101")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console/patients/patient-101"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        session_id = http.cookies[COOKIE]
        assert session_id.startswith("scs_") and "." not in session_id  # an opaque id, never the token
        assert "Path=/console" in cookie and 3500 <= int(re.search(r"Max-Age=(\d+)", cookie).group(1)) <= 3600
        # the cookie is the credential on the console's pages, and nowhere else
        patient = http.get("/console/patients/patient-101")
        assert patient.status_code == 200 and "Sign out" in patient.text
        assert http.get("/api/v1/patients/patient-101/results").status_code == 401
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', patient.text).group(1)
        path = f"/console/alerts/{alert.alert_id}/acknowledge"
        forged = http.post(path, headers=form, content="note=forged&back=alerts", follow_redirects=False)
        assert forged.status_code == 403  # a form from elsewhere cannot know the token
        done = http.post(path, headers=form, content=f"note=called&back=alerts&csrf={csrf}", follow_redirects=False)
        assert done.status_code == 303
        signed_out = http.post("/console/logout", follow_redirects=False)
        assert signed_out.status_code == 303 and "Max-Age=0" in signed_out.headers["set-cookie"]
        assert http.get("/console/", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303
        # logout ended the session on the server: the old cookie, kept by someone, opens nothing
        http.cookies.set(COOKIE, session_id, path="/console")
        assert http.get("/console/", follow_redirects=False).status_code == 401
    assert console.session_store.sessions == {}
    actions = [r["action"] for r in console.audit_records()]
    assert actions[0] == "console.sign_in" and "console.sign_out" in actions
    assert asyncio.run(console.alerts.get("clinic-north", alert.alert_id)).note == "called"


def test_sign_in_refuses_bad_tokens_other_roles_and_other_sites(console):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with TestClient(console.app) as http:
        def sign_in(token: str, **headers):
            return http.post("/console/login", headers={**form, **headers}, follow_redirects=False,
                             content="token=" + urllib.parse.quote(token) + "&next=https://evil.example/")
        assert sign_in("not-a-token").status_code == 401
        expired = console.token("north", exp=1_000_000_000)
        assert sign_in(expired).status_code == 401
        assert "set-cookie" not in sign_in(expired).headers
        uploader = sign_in(console.token("uploader"))
        assert uploader.status_code == 403 and "for clinicians" in uploader.text
        assert sign_in(console.token("north"), Origin="https://evil.example").status_code == 403
        assert sign_in(console.token("north"), Origin="null").status_code == 403  # an opaque origin, unvouched
        vouched = sign_in(console.token("north"), Origin="null", **{"Sec-Fetch-Site": "same-origin"})
        assert vouched.status_code == 303  # a no-referrer page of this site: the browser says same-origin
        ok = sign_in(console.token("north"))
        assert ok.status_code == 303 and ok.headers["location"] == "/console/"  # never to another site


def test_the_checkin_page_names_the_change_rule_with_its_figures_and_a_recording_not_measurable(tmp_path):
    c = Console(tmp_path)
    items = history("patient-103", "clinic-north", 5)
    last = items[-1]["results"]
    rate = last["vocal_markers"]["speech_rate"]["baseline"]
    last["vocal_markers"]["speech_rate"]["baseline"] = {
        **rate, "notable": True, "direction": "lower", "rule": "robust baseline ...", "measurable": True,
        "rci": -5.34, "rci_threshold": 3.69, "cusum": 5.93, "cusum_threshold": 4.82, "cusum_checkins": 3,
        "rules_fired": ["reliable_change", "sustained_drift"]}
    speaking = last["vocal_markers"]["speaking_fraction"]["baseline"]
    last["vocal_markers"]["speaking_fraction"]["baseline"] = {
        **speaking, "notable": False, "measurable": False,
        "reason": "not measurable: only 1.2 s of voiced speech (at least 2 s needed)"}
    asyncio.run(c.add(items))
    with TestClient(c.app) as http:
        page = http.get(f"/console/patients/patient-103/checkins/{items[-1]['job_id']}", headers=c.headers("north"))
        overview = http.get("/console/", headers=c.headers("north"))
    assert page.status_code == 200
    assert ("notably lower</strong>; reliable change, RCI -5.3 (threshold 3.69); sustained drift, CUSUM 5.9 over "
            "3 check-ins (threshold 4.82)") in page.text
    assert "not measurable: only 1.2 s of voiced speech (at least 2 s needed)" in page.text
    assert "Speaking time: not measurable in the last check-in" in overview.text


def test_a_stored_result_that_does_not_parse_is_an_error_naming_it_never_a_checkin_left_out(tmp_path):
    """The console reads each result parsed (shared.domain.stored_results.stored_result): one that is not a
    ResultItem is a server error naming its job and field, not a history that quietly lacks a check-in."""
    from shared.domain.errors import InvalidStoredResult

    c = Console(tmp_path)
    items = history("patient-104", "clinic-north", 3)
    del items[1]["results"]["multimodal_fusion"]["risk_level"]
    asyncio.run(c.add(items))
    named = f"the stored result of {items[1]['job_id']} is not a valid ResultItem: " \
            "results.multimodal_fusion.risk_level: Field required"
    with TestClient(c.app) as http:
        for path in ("/console/patients/patient-104", "/console/patients/patient-104/history.csv",
                     f"/console/patients/patient-104/checkins/{items[1]['job_id']}"):
            with pytest.raises(InvalidStoredResult) as raised:
                http.get(path, headers=c.headers("north"))
            assert str(raised.value) == named
        readable = http.get(f"/console/patients/patient-104/checkins/{items[2]['job_id']}", headers=c.headers("north"))
    assert readable.status_code == 200  # the other check-ins still read
    with TestClient(c.app, raise_server_exceptions=False) as http:
        answer = http.get("/console/patients/patient-104", headers=c.headers("north"))
    assert answer.status_code == 500 and "patient-104" not in answer.text
