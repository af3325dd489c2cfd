"""The results stage on in-memory adapters: it saves fusion's findings as the
patient's SchizodotUsers item once, sends the FHIR bundle to the EHR when that is
configured (a failed push is retried, and only the last attempt completes the job
without it) and completes the job."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from services.results.ehr.publisher import EhrPublisher
from services.results.settings import ResultsSettings
from services.results.stage.handlers import RESULTS, ResultsDeps
from shared.domain.checkin import artifact_key, utc_now
from shared.domain.job import PipelinePlan, new_job, plan_weights
from shared.domain.stored_results import stored_result
from shared.fakes import FakeAdapters, MemoryAuditStore, deliver
from shared.identity.audit import AuditTrail, AuditUnavailable, patient_ref
from shared.runtime.events import FusionCompleted, encode_event

RESULTS_MAP = {
    "audio_emotion": {"primary_emotion": "calm", "confidence": 0.87, "all_emotions": [], "assessed": True},
    "facial_emotion": {"primary_emotion": "neutral", "confidence": 0.82, "all_emotions": [], "face_detected": True,
                       "frame_count": 150},
    "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True, "compliance_score": None,
                   "confidence": 0.5, "verification_status": "inconclusive", "reason": "pill detection is not configured"},
    "multimodal_fusion": {"emotional_consistency": "consistent", "overall_emotion": "calm", "confidence": 0.85,
                          "risk_level": "low", "risk_factors": [], "risk_evidence": [], "method": "rule_based_v2",
                          "modalities_not_assessed": {}},
    "clinical_summary": {"emotional_state": "calm", "medication_adherence": "not verified", "risk_assessment": "low",
                         "recommendations": ["Continue current treatment plan"], "generated_by": "rule_based"},
}


PATIENT_KEY = "clinic-a.patient-001"  # patient-001 of clinic-a, as stored


def _earlier_item(n: int) -> dict:
    """An earlier SchizodotUsers item of the patient, as the results stage stored it."""
    stamp = f"2026-01-0{n + 1}T10:00:00.000000Z"
    return {"user_id": PATIENT_KEY, "timestamp": stamp, "job_id": f"job-00000000000{n}",
            "s3_key": f"uploads/{PATIENT_KEY}/job-00000000000{n}/x.mp4", "analysis_type": "multimodal",
            "analyzed_at": stamp, "processing_time_seconds": 30.0, "status": "completed", "results": RESULTS_MAP}


def _audit(store: MemoryAuditStore | None = None) -> AuditTrail:
    return AuditTrail(store or MemoryAuditStore(), "test-pseudonym-key", "schizodot-results")


class StandInSqs:
    def __init__(self, fail: bool) -> None:
        self.fail, self.sent = fail, []

    async def send_message(self, *, QueueUrl, MessageBody, MessageAttributes):
        if self.fail:
            raise ConnectionError("the EHR queue does not answer")
        self.sent.append(json.loads(MessageBody))
        return {"MessageId": "ehr-1"}


async def _fused(fakes: FakeAdapters, results: dict = RESULTS_MAP) -> str:
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    await fakes.jobs.create(new_job(job_id, patient_id=PATIENT_KEY, s3_key=f"uploads/{PATIENT_KEY}/{job_id}/x.mp4",
                                    filename="x.mp4", content_type="video/mp4", created_at=utc_now(), message="q",
                                    source="api", clinic_id="clinic-a"))
    for stage in ("ingest", "audio", "vision", "fusion"):
        run = await fakes.jobs.claim_stage(job_id, stage, f"m-{stage}", "x")
        plan = PipelinePlan(expected=["audio", "vision"], weights=plan_weights(["audio", "vision"])) \
            if stage == "ingest" else None
        await fakes.jobs.finish_stage(run, "x", {"artifact_key": artifact_key(job_id, stage)}, plan)
    await fakes.storage.put_json(artifact_key(job_id, "fusion"), {"job_id": job_id, "analysed_at": utc_now(),
                                                                  "compute_seconds": 0.1, "results": results})
    return job_id


def _completion(fakes: FakeAdapters, ehr: EhrPublisher | None, *, final_attempt: bool = False,
                audit: AuditTrail | None = None):
    async def scenario():
        job_id = await _fused(fakes)
        deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history, ehr, audit or _audit())
        body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
        await deliver(fakes.runner(RESULTS, deps), body, final_attempt=final_attempt)
        return job_id, await fakes.jobs.get(job_id)

    return asyncio.run(scenario())


def test_the_findings_are_saved_as_the_patients_item_and_the_job_completes():
    fakes = FakeAdapters()
    job_id, job = _completion(fakes, None)
    [item] = asyncio.run(fakes.history.latest(PATIENT_KEY))
    assert item["job_id"] == job_id and item["results"] == RESULTS_MAP and item["analysis_type"] == "multimodal"
    assert item["user_id"] == PATIENT_KEY and "clinic_id" not in item  # the clinic is stored in the key alone
    assert job.status == "completed" and job.progress == 100 and job.message == "Analysis completed successfully"
    assert job.results == {"emotion_summary": "calm", "compliance_score": None, "risk_level": "low",
                           "verification_status": "inconclusive"}
    assert fakes.publisher.sent == []  # the last stage: nothing after it


def test_the_ehr_gets_the_fhir_bundle_before_the_job_completes_audited_with_the_clinics_own_patient_id():
    fakes, sqs, store = FakeAdapters(), StandInSqs(fail=False), MemoryAuditStore()
    job_id, job = _completion(fakes, EhrPublisher(sqs, None, "https://sqs/ehr-inbox", None), audit=_audit(store))
    [event] = sqs.sent
    assert event["subject"] == job_id and event["data"]["resourceType"] == "Bundle"
    assert job.status == "completed"
    subjects = {json.dumps(e["resource"]["subject"]) for e in event["data"]["entry"] if "subject" in e["resource"]}
    assert subjects and all('"Patient/patient-001"' in s and "clinic-a." not in s for s in subjects)
    [record] = store.records.values()
    assert (record["action"], record["clinic_id"], record["job_id"], record["role"]) == \
        ("ehr.results_sent", "clinic-a", job_id, "service")
    assert record["patient_ref"] == patient_ref("test-pseudonym-key", PATIENT_KEY)


def test_results_are_not_sent_to_the_ehr_while_the_audit_trail_fails():
    store = MemoryAuditStore()
    store.failing = True
    sqs = StandInSqs(fail=False)
    with pytest.raises(AuditUnavailable):
        _completion(FakeAdapters(), EhrPublisher(sqs, None, "https://sqs/ehr-inbox", None), audit=_audit(store))
    assert sqs.sent == []


def test_an_unreachable_ehr_is_retried_and_only_the_last_attempt_completes_without_it():
    assert asyncio.run(_first_attempt(FakeAdapters())) == "processing"  # the job waits for the retry
    job_id, job = _completion(FakeAdapters(), EhrPublisher(StandInSqs(fail=True), None, "https://sqs/ehr", None),
                              final_attempt=True)
    assert job.status == "completed" and job.progress == 100
    assert job.message.startswith("Analysis completed; sending it to the EHR failed: ConnectionError")


async def _first_attempt(fakes: FakeAdapters) -> str:
    job_id = await _fused(fakes)
    deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history,
                       EhrPublisher(StandInSqs(fail=True), None, "https://sqs/ehr", None), _audit())
    body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
    with pytest.raises(ConnectionError, match="does not answer"):
        await deliver(fakes.runner(RESULTS, deps), body)
    return (await fakes.jobs.get(job_id)).status


# --- alerts on each new result -----------------------------------------------------------------

class RecordingQueue:
    def __init__(self) -> None:
        self.sent = []

    async def send(self, event) -> None:
        self.sent.append(event)


def _with_alerts(rules: dict, *, earlier: int = 0, repeat: bool = False, status: str = "inconclusive"):
    from services.results.alerts import AlertService, InMemoryAlertStore, InMemoryRoster
    from shared.domain.clinics import AlertDelivery, ClinicDirectory, ClinicProfile, WebhookTarget

    fakes, queue = FakeAdapters(), RecordingQueue()
    webhook = WebhookTarget(url="https://ehr.example/hooks", secret_env="UNUSED_HERE")
    clinics = ClinicDirectory(clinics={"clinic-a": ClinicProfile(alerts=rules,
                                                                 delivery=AlertDelivery(webhook=webhook))})
    service = AlertService(InMemoryAlertStore(), InMemoryRoster(), clinics, queue)

    async def scenario():
        results = {**RESULTS_MAP, "compliance": {**RESULTS_MAP["compliance"], "verification_status": status}}
        for n in range(earlier):  # the patient's earlier check-ins
            await fakes.history.save({**_earlier_item(n), "results": results})
        job_id = await _fused(fakes, results)
        deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history, None, _audit(), alerts=service,
                           history=fakes.history)
        body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
        await deliver(fakes.runner(RESULTS, deps), body)
        if repeat:  # the same result again (a redelivery after a crash before the job completed)
            await service.on_result("clinic-a", stored_result((await fakes.history.latest(PATIENT_KEY, 1))[0]), [])
        return job_id, service

    return asyncio.run(scenario()), queue


def test_a_saved_result_raises_the_clinics_alerts_under_its_own_patient_id_and_queues_them_once():
    (job_id, service), queue = _with_alerts({"risk_levels": ["low", "moderate", "high"]}, earlier=2, repeat=True)
    alerts = asyncio.run(service.alerts.open_alerts("clinic-a"))
    assert [(a.rule, a.patient_id, a.job_id, a.severity) for a in alerts] == [("risk", "patient-001", job_id, "low")]
    assert [e.alert_id for e in queue.sent] == [alerts[0].alert_id] * 2  # queued again: delivery had not started
    entry = asyncio.run(service.roster.get("clinic-a", "patient-001"))
    assert entry is not None and entry.last_job_id == job_id  # the console's patient list


def test_a_clinic_whose_rules_do_not_fire_gets_no_alert_but_its_patient_is_listed():
    (job_id, service), queue = _with_alerts({"risk_levels": ["high"]})
    assert asyncio.run(service.alerts.open_alerts("clinic-a")) == [] and queue.sent == []
    assert asyncio.run(service.roster.get("clinic-a", "patient-001")).last_job_id == job_id


def test_an_earlier_result_that_does_not_parse_is_named_never_skipped_and_the_new_result_stays_saved():
    """The alert rules read the patient's earlier results parsed (services.results.alerts.earlier_results):
    one that does not parse fails the try naming its job and field (retried like any failure), and the
    last try completes the job saying so; the new result is saved either way."""
    from services.results.alerts import AlertService, InMemoryAlertStore, InMemoryRoster
    from shared.domain.clinics import ClinicDirectory
    from shared.domain.errors import InvalidStoredResult

    named = ("the stored result of job-000000000000 is not a valid PartialResultItem: "
             "results.compliance.verification_status: Input should be a valid string")

    async def scenario(final_attempt: bool):
        fakes = FakeAdapters()
        broken = _earlier_item(0)
        compliance = {**RESULTS_MAP["compliance"], "verification_status": 5}
        await fakes.history.save({**broken, "results": {**RESULTS_MAP, "compliance": compliance}})
        job_id = await _fused(fakes)
        service = AlertService(InMemoryAlertStore(), InMemoryRoster(), ClinicDirectory(), RecordingQueue())
        deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history, None, _audit(), alerts=service,
                           history=fakes.history)
        body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
        try:
            await deliver(fakes.runner(RESULTS, deps), body, final_attempt=final_attempt)
        except InvalidStoredResult as error:
            return str(error), await fakes.jobs.get(job_id), await fakes.history.for_job(PATIENT_KEY, job_id)
        return None, await fakes.jobs.get(job_id), await fakes.history.for_job(PATIENT_KEY, job_id)

    error, job, saved = asyncio.run(scenario(final_attempt=False))
    assert error == named and job.status == "processing" and saved is not None
    error, job, saved = asyncio.run(scenario(final_attempt=True))
    assert error is None and job.status == "completed" and saved is not None
    assert job.message == f"Analysis completed successfully; raising alerts failed: InvalidStoredResult: {named}"


def test_the_alert_rules_read_the_patients_earlier_results_they_need_from_the_projected_history():
    """Results reads only ALERT_HISTORY_ATTRIBUTES of the earlier items (a projection); the missed-medication
    run is made of them, each named by its job, time and status, under the clinic's own patient id."""
    (job_id, service), _ = _with_alerts({"risk_levels": [], "missed_medication_streak": 3}, earlier=2,
                                        status="non_compliant")
    [alert] = asyncio.run(service.alerts.open_alerts("clinic-a"))
    assert (alert.rule, alert.patient_id, alert.job_id) == ("missed_medication", "patient-001", job_id)
    assert [(c["job_id"], c["timestamp"], c["status"]) for c in alert.evidence["checkins"]][1:] == [
        ("job-000000000001", "2026-01-02T10:00:00.000000Z", "not taken"),
        ("job-000000000000", "2026-01-01T10:00:00.000000Z", "not taken")]


def test_a_retry_after_the_item_was_saved_does_not_count_the_new_result_among_its_own_earlier_ones():
    """The history the rules read is fetched beside fusion's document, before this try's save: on a retry the
    first try's saved item is in it, and is left out (by its job id and time) (a missed-medication run of 2 needs one
    earlier missed check-in; the patient has none). The alerts of the first try failed (the roster did not
    answer): the retry records the check-in and raises what the rules raise, once."""
    from services.results.alerts import AlertService, InMemoryAlertStore, InMemoryRoster
    from shared.domain.clinics import ClinicDirectory, ClinicProfile

    class Unreachable(InMemoryRoster):
        async def record_checkin(self, clinic_id, patient_id, job_id, at):
            raise ConnectionError("the roster table does not answer")

    fakes, queue = FakeAdapters(), RecordingQueue()
    clinics = ClinicDirectory(clinics={"clinic-a": ClinicProfile(alerts={"risk_levels": ["low"],
                                                                         "missed_medication_streak": 2})})
    alerts, roster = InMemoryAlertStore(), InMemoryRoster()

    async def scenario():
        results = {**RESULTS_MAP, "compliance": {**RESULTS_MAP["compliance"], "verification_status": "non_compliant"}}
        job_id = await _fused(fakes, results)
        body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
        for service in (AlertService(alerts, Unreachable(), clinics, queue), AlertService(alerts, roster, clinics, queue)):
            deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history, None, _audit(), alerts=service,
                               history=fakes.history)
            try:
                await deliver(fakes.runner(RESULTS, deps), body)
            except ConnectionError:
                assert len(fakes.history.items) == 1 and (await fakes.jobs.get(job_id)).status != "completed"
        return job_id, (await fakes.jobs.get(job_id)).status

    job_id, status = asyncio.run(scenario())
    assert status == "completed" and len(fakes.history.items) == 1
    raised = asyncio.run(alerts.open_alerts("clinic-a"))
    assert [a.rule for a in raised] == ["risk"]  # no missed-medication run: the result is not its own earlier one
    assert asyncio.run(roster.get("clinic-a", "patient-001")).last_job_id == job_id


@pytest.mark.parametrize("broken, named", [
    (lambda results: {**results, "multimodal_fusion": {**results["multimodal_fusion"], "risk_level": None}},
     "results.multimodal_fusion.risk_level: Input should be a valid string"),
    (lambda results: {k: v for k, v in results.items() if k != "clinical_summary"},
     "results.clinical_summary: Field required"),
])
def test_a_fusion_document_that_does_not_parse_fails_the_job_in_words_and_loses_nothing(broken, named):
    """Results parses fusion's document once as it enters (shared.domain.findings.FusionDocument): a bad one is an
    InputError (the consumer fails the job with its message at once) naming the document and the field;
    nothing is saved for the patient, and the document stays as it was."""
    from shared.domain.errors import InputError

    fakes = FakeAdapters()

    async def scenario():
        job_id = await _fused(fakes)
        key = artifact_key(job_id, "fusion")
        bad = {**await fakes.storage.get_json(key), "results": broken(RESULTS_MAP)}
        await fakes.storage.put_json(key, bad)
        deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history, None, _audit())
        body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
        with pytest.raises(InputError) as raised:
            await deliver(fakes.runner(RESULTS, deps), body)
        return job_id, bad, raised.value, await fakes.storage.get_json(key)

    job_id, bad, error, kept = asyncio.run(scenario())
    assert str(error).startswith(f"fusion's findings (artifacts/{job_id}/fusion.json) is not a valid FusionDocument: ")
    assert named in str(error)
    assert kept == bad and asyncio.run(fakes.history.latest(PATIENT_KEY)) == []


def test_an_unreadable_history_is_the_alerts_failure_retried_and_only_the_last_attempt_completes_without_them():
    """The alert rules' history is read while the item is saved: a failure to read it retries the message,
    and on the last attempt the job completes with the result saved and says the alerts failed."""
    from services.results.alerts import AlertService, InMemoryAlertStore, InMemoryRoster
    from shared.domain.clinics import ClinicDirectory, ClinicProfile
    from shared.fakes import InMemoryHistory

    class UnreadableHistory(InMemoryHistory):
        async def latest_projected(self, patient_key, attributes, limit=10):
            raise ConnectionError("the history table does not answer")

    def attempt(final_attempt: bool):
        fakes = FakeAdapters(history=UnreadableHistory())
        service = AlertService(InMemoryAlertStore(), InMemoryRoster(),
                               ClinicDirectory(clinics={"clinic-a": ClinicProfile(alerts={"risk_levels": ["low"]})}),
                               RecordingQueue())

        async def scenario():
            job_id = await _fused(fakes)
            deps = ResultsDeps(ResultsSettings(), fakes.storage, fakes.history, None, _audit(), alerts=service,
                               history=fakes.history)
            body = encode_event(FusionCompleted.TYPE, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))
            try:
                await deliver(fakes.runner(RESULTS, deps), body, final_attempt=final_attempt)
            except ConnectionError:
                pass
            return await fakes.jobs.get(job_id), list(fakes.history.items.values())

        return asyncio.run(scenario())

    retried, saved = attempt(final_attempt=False)
    assert retried.status == "processing" and len(saved) == 1  # saved once; the redelivery finds it stored
    completed, saved = attempt(final_attempt=True)
    assert completed.status == "completed" and len(saved) == 1
    assert completed.message == ("Analysis completed successfully; raising alerts failed: "
                                 "ConnectionError: the history table does not answer")
