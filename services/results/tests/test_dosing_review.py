"""Dosing review over HTTP (the results API and the console mounted on in-memory adapters,
real tokens): the verdict, where it flows (the stored item, the job's summary, the alert
rule, the EHR's MedicationAdministration, the audit trail, CSV and PDF, adherence), and
every bad input."""

from __future__ import annotations

import asyncio
import csv
import io
import re

import pypdf
import pytest
from fastapi.testclient import TestClient

from services.results.console.tests.fakes import Console
from services.results.dosing import DosingReview, DosingReviews
from shared.identity.principal import CredentialKind, Principal, Role, patient_key
from tests.browser.contract_items import history

PATIENT, CLINIC = "patient-301", "clinic-north"


@pytest.fixture
def console(tmp_path):
    c = Console(tmp_path)
    mine = history(PATIENT, CLINIC, 4, statuses=["not_assessed", "inconclusive", "not_assessed", "not_assessed"])
    theirs = history("patient-901", "clinic-south", 1)
    asyncio.run(c.add(mine + theirs))
    asyncio.run(c.add_jobs(mine + theirs))
    c.mine, c.theirs = mine, theirs
    return c


def stored(c: Console, job_id: str) -> dict:
    return next(i for i in c.history.items.values() if i["job_id"] == job_id)


def post(http, c: Console, job_id: str, body: dict, who: str = "north"):
    return http.post(f"/api/v1/jobs/{job_id}/dosing-review", json=body, headers=c.headers(who))


def test_a_taken_verdict_is_stored_summarised_audited_and_sent_to_the_ehr(console):
    c, job_id = console, console.mine[0]["job_id"]
    with TestClient(c.app) as http:
        answer = post(http, c, job_id, {"verdict": "taken", "note": "swallowed, mouth shown empty"})
    assert answer.status_code == 200, answer.text
    compliance = answer.json()["compliance"]
    assert compliance["verification_status"] == "verified_by_review" and compliance["compliance_score"] == 1.0
    review = compliance["review"]
    assert review["verdict"] == "taken" and review["by"] == "dev-clinician" and review["revision"] == 1
    assert review["at"] == "2026-11-20T12:00:00.000000Z" and review["history"] == []
    assert review["automated"] == {"verification_status": "not_assessed", "compliance_score": None}
    assert stored(c, job_id)["results"]["compliance"] == compliance  # the item itself, written by results
    assert c.jobs.items[job_id]["results"]["compliance_score"] == 1.0
    assert c.jobs.items[job_id]["results"]["verification_status"] == "verified_by_review"

    [event] = c.ehr_inbox.sent
    assert event["type"] == "org.schizodot.dosing.reviewed.v1" and event["subject"] == job_id
    [entry] = event["data"]["entry"]
    administration = entry["resource"]
    assert administration["resourceType"] == "MedicationAdministration" and administration["status"] == "completed"
    assert administration["subject"]["identifier"]["value"] == PATIENT  # the clinic's own id, never the key
    assert "statusReason" not in administration

    audit = [r for r in c.audit_records() if r["action"] == "dosing.review"]
    assert len(audit) == 1 and audit[0]["actor"] == "dev-clinician" and audit[0]["detail"]["verdict"] == "taken"
    assert any(r["action"] == "ehr.dosing_review_sent" for r in c.audit_records())


def test_an_amended_verdict_keeps_the_history_and_a_not_done_goes_out_with_its_reason(console):
    c, job_id = console, console.mine[1]["job_id"]
    with TestClient(c.app) as http:
        assert post(http, c, job_id, {"verdict": "taken"}).status_code == 200
        answer = post(http, c, job_id, {"verdict": "not_taken", "reason": "pill_removed", "note": "spat it out"},
                      who="north-admin")
    compliance = answer.json()["compliance"]
    assert compliance["verification_status"] == "not_taken" and compliance["compliance_score"] == 0.0
    assert compliance["review"]["revision"] == 2 and compliance["review"]["by"] == "dev-admin"
    assert [h["verdict"] for h in compliance["review"]["history"]] == ["taken"]
    assert compliance["review"]["automated"]["verification_status"] == "inconclusive"  # kept from before any review
    latest = c.ehr_inbox.sent[-1]["data"]["entry"][0]["resource"]
    assert latest["status"] == "not-done"
    assert latest["statusReason"][0]["coding"][0]["code"] == "pill_removed"
    assert c.ehr_inbox.sent[0]["id"] != c.ehr_inbox.sent[1]["id"]  # one event per verdict, the resource id kept
    assert c.ehr_inbox.sent[0]["data"]["entry"][0]["resource"]["id"] == latest["id"]


def test_cannot_tell_is_unknown_to_the_ehr_and_leaves_no_score(console):
    c, job_id = console, console.mine[2]["job_id"]
    with TestClient(c.app) as http:
        answer = post(http, c, job_id, {"verdict": "unverifiable", "reason": "mouth_not_shown"})
    compliance = answer.json()["compliance"]
    assert compliance["verification_status"] == "unverifiable" and compliance["compliance_score"] is None
    assert c.ehr_inbox.sent[-1]["data"]["entry"][0]["resource"]["status"] == "unknown"


@pytest.mark.parametrize("body, words", [
    ({"verdict": "not_taken"}, "needs a reason"),
    ({"verdict": "unverifiable", "note": "hard to see"}, "needs a reason"),
    ({"verdict": "not_taken", "reason": "felt like it"}, "is not one of"),
    ({"verdict": "unverifiable", "reason": "other"}, "needs a note"),
    ({"verdict": "maybe"}, "verdict"),
    ({"verdict": "TAKEN"}, "verdict"),
    ({}, "verdict"),
    ({"verdict": "taken", "extra": 1}, "extra"),
])
def test_a_bad_review_is_422_with_the_reason_and_changes_nothing(console, body, words):
    c, job_id = console, console.mine[0]["job_id"]
    before = stored(c, job_id)
    with TestClient(c.app) as http:
        answer = post(http, c, job_id, body)
    assert answer.status_code == 422 and words in answer.text, answer.text
    assert stored(c, job_id) == before and c.ehr_inbox.sent == []
    assert not [r for r in c.audit_records() if r["action"] == "dosing.review"]


def test_roles_without_access_get_403(console, tmp_path):
    c, job_id = console, console.mine[0]["job_id"]
    with TestClient(c.app) as http:
        assert post(http, c, job_id, {"verdict": "taken"}, who="uploader").status_code == 403
        assert http.post(f"/api/v1/jobs/{job_id}/dosing-review", json={"verdict": "taken"}).status_code == 401
        ehr = http.post(f"/api/v1/jobs/{job_id}/dosing-review", json={"verdict": "taken"}, headers={
            "Authorization": f"Bearer {c.issuer.mint('dev-ehr', schizodot_clinic=CLINIC)}"})
    assert ehr.status_code == 403
    assert stored(c, job_id)["results"]["compliance"].get("review") is None


def test_another_clinics_checkin_is_404_exactly_like_a_missing_one(console):
    c = console
    with TestClient(c.app) as http:
        theirs = post(http, c, c.theirs[0]["job_id"], {"verdict": "taken"})
        missing = post(http, c, "job-000000000bad", {"verdict": "taken"})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(c.theirs[0]["job_id"], "X") == missing.json()["detail"].replace(
        "job-000000000bad", "X")
    assert stored(c, c.theirs[0]["job_id"])["results"]["compliance"].get("review") is None


def test_a_checkin_still_processing_answers_409(console):
    c, job_id = console, console.mine[3]["job_id"]
    c.jobs.items[job_id]["status"] = "processing"
    with TestClient(c.app) as http:
        answer = post(http, c, job_id, {"verdict": "taken"})
    assert answer.status_code == 409 and "still processing" in answer.json()["detail"]


class RacingStore:
    """The in-memory results store with a network's pause before each write, so that two reviewers
    who read the same revision both try to write it; the loser reads again (counted)."""

    def __init__(self, inner) -> None:
        self.inner, self.reads = inner, 0

    async def get(self, user_id, timestamp):
        self.reads += 1
        return await self.inner.get(user_id, timestamp)

    async def replace_compliance(self, *args):
        await asyncio.sleep(0.01)
        return await self.inner.replace_compliance(*args)


def test_two_reviewers_at_once_are_both_kept_in_order_and_the_later_is_current(console):
    c, item = console, console.mine[0]
    store = RacingStore(c.history)
    reviews = DosingReviews(c.jobs, c.history, store, c.audit, storage=c.storage, clock=c.reviews.clock)
    def reviewer(name: str) -> Principal:
        return Principal(subject=name, role=Role.CLINICIAN, clinic_id=CLINIC, credential=CredentialKind.BEARER)

    async def both():
        return await asyncio.gather(
            reviews.record(reviewer("dr-a"), item["job_id"], DosingReview(verdict="taken")),
            reviews.record(reviewer("dr-b"), item["job_id"], DosingReview(verdict="unverifiable",
                                                                          reason="poor_video")))
    first, second = asyncio.run(both())
    assert store.reads >= 1  # one of them lost the race and read again
    final = stored(c, item["job_id"])["results"]["compliance"]["review"]
    assert final["revision"] == 2 and len(final["history"]) == 1
    assert {final["by"], final["history"][0]["by"]} == {"dr-a", "dr-b"}  # nothing lost
    assert final == (second if second["review"]["revision"] == 2 else first)["review"]  # the later is current


def test_two_not_taken_verdicts_in_a_row_raise_the_missed_dose_alert(console):
    c = console
    with TestClient(c.app) as http:
        for item in c.mine[:2]:
            assert post(http, c, item["job_id"], {"verdict": "not_taken", "reason": "no_pill_shown"}).status_code == 200
    alerts = asyncio.run(c.alerts.for_patient(CLINIC, PATIENT))
    missed = [a for a in alerts if a.rule == "missed_medication"]
    assert len(missed) == 1 and missed[0].job_id == c.mine[1]["job_id"]
    assert [r["status"] for r in missed[0].evidence["checkins"]] == ["not taken (reviewer)"] * 2


def test_adherence_counts_each_source_and_the_streak_says_which(console):
    c = console
    item = stored(c, c.mine[3]["job_id"])
    item["results"]["compliance"]["self_report"] = {"classification": "taken", "words": ["took", "my", "tablet"],
                                                    "method": "rules", "window_source": "timeline"}
    with TestClient(c.app) as http:
        post(http, c, c.mine[2]["job_id"], {"verdict": "taken"})
        post(http, c, c.mine[1]["job_id"], {"verdict": "not_taken", "reason": "pill_not_placed"})
        answer = http.get(f"/api/v1/patients/{PATIENT}/adherence", params={"days": 30}, headers=c.headers("north"))
        week = http.get(f"/api/v1/patients/{PATIENT}/adherence", params={"days": 7}, headers=c.headers("north"))
        bad = http.get(f"/api/v1/patients/{PATIENT}/adherence", params={"days": 0}, headers=c.headers("north"))
        uploader = http.get(f"/api/v1/patients/{PATIENT}/adherence", headers=c.headers("uploader"))
        theirs = http.get("/api/v1/patients/patient-901/adherence", headers=c.headers("north"))
    assert bad.status_code == 422 and uploader.status_code == 403
    assert theirs.json()["counts"] == {k: 0 for k in theirs.json()["counts"]}  # another clinic's: nothing
    body = answer.json()
    assert body["counts"] == {"verified_by_review": 1, "verified_by_detector": 0, "reported_taken": 1,
                              "reported_missed": 0, "not_taken": 1, "unverifiable": 0, "not_assessed": 1}
    assert body["streak"] == {"length": 2, "verified": 1, "reported": 1,
                              "words": "2 in a row taken (1 verified, 1 reported by the patient)"}
    assert [ch["intake"] for ch in body["checkins"]] == ["reported_taken", "verified_by_review", "not_taken",
                                                          "not_assessed"]
    assert sum(week.json()["counts"].values()) < 4  # the older check-ins fall outside the week
    assert any(r["action"] == "patient.adherence_read" for r in c.audit_records())


def test_the_console_queue_is_oldest_first_and_keystrokes_clear_it(console):
    c = console
    with TestClient(c.app) as http:
        queue = http.get("/console/review", headers=c.headers("north"))
        assert queue.status_code == 200
        waiting = re.findall(r'/checkins/(job-[0-9a-z]+)/review">Review job', queue.text)
        assert waiting == [i["job_id"] for i in c.mine]  # oldest first, only this clinic's
        first = http.get(f"/console/patients/{PATIENT}/checkins/{waiting[0]}/review", headers=c.headers("north"))
        assert first.status_code == 200 and "No review clip for this check-in" in first.text
        assert 'src="/console/static/review.js"' in first.text and "1 of 4" in first.text
        form = f"/console/patients/{PATIENT}/checkins/{waiting[0]}/review"
        missing_reason = http.post(form, data={"verdict": "not_taken"}, headers=c.headers("north"))
        assert missing_reason.status_code == 422 and "needs a reason" in missing_reason.text
        done = http.post(form, data={"verdict": "taken", "box_step": "hand_to_mouth", "box_x": "10", "box_y": "12",
                                     "box_w": "30", "box_h": "20"}, headers=c.headers("north"), follow_redirects=False)
        assert done.status_code == 303
        assert done.headers["location"] == f"/console/patients/{PATIENT}/checkins/{waiting[1]}/review"
        bad_box = http.post(f"/console/patients/{PATIENT}/checkins/{waiting[1]}/review",
                            data={"verdict": "taken", "box_step": "hand_to_mouth", "box_x": "-4", "box_y": "1",
                                  "box_w": "30", "box_h": "20"}, headers=c.headers("north"))
        assert bad_box.status_code == 422
        theirs = http.get(f"/console/patients/patient-901/checkins/{c.theirs[0]['job_id']}/review",
                          headers=c.headers("north"))
        assert theirs.status_code == 404
        checkin = http.get(f"/console/patients/{PATIENT}/checkins/{waiting[0]}", headers=c.headers("north"))
        assert "Reviewed on video by Dr Dev Clinician" in checkin.text
        report = http.get(f"/console/patients/{PATIENT}/history.csv", headers=c.headers("north"))
        pdf = http.get(f"/console/patients/{PATIENT}/report.pdf", headers=c.headers("north"))
    review = stored(c, waiting[0])["results"]["compliance"]["review"]
    [box] = review["pill_boxes"]
    assert box["box_px"] == {"x": 10, "y": 12, "width": 30, "height": 20}
    label = asyncio.run(c.storage.get_json(box["key"]))
    assert label["frame_key"] == f"artifacts/{waiting[0]}/evidence/hand_to_mouth.jpg" and label["clinic_id"] == CLINIC
    rows = {r["job_id"]: r for r in csv.DictReader(io.StringIO(report.text))}
    assert rows[waiting[0]]["dosing_review"] == "taken" and rows[waiting[0]]["intake_source"] == "verified_by_review"
    assert rows[waiting[0]]["dosing_reviewed_by"] == "Dr Dev Clinician"
    text = pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "reviewed on video" in text


def test_the_last_verdict_of_the_queue_lands_on_the_cleared_queue(console):
    c = console
    with TestClient(c.app) as http:
        for item in c.mine:
            done = http.post(f"/console/patients/{PATIENT}/checkins/{item['job_id']}/review",
                             data={"verdict": "unverifiable", "reason": "no_clip"}, headers=c.headers("north"),
                             follow_redirects=False)
            assert done.status_code == 303
        assert done.headers["location"] == "/console/review?done=1"
        cleared = http.get(done.headers["location"], headers=c.headers("north"))
    assert "The queue is clear" in cleared.text and "Nothing waiting." in cleared.text
    assert patient_key(CLINIC, PATIENT)  # the items stayed under the clinic's key
