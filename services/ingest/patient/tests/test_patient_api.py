"""The patient check-in API against a real S3 and DynamoDB (moto's server over HTTP).

Uploads go to presigned UploadPart URLs exactly as the phone sends them.
Parts are 64 KiB here (S3's 5 MiB floor is lowered in the emulator) so that a
small recording still makes several parts.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from contextlib import asynccontextmanager

import httpx
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi import FastAPI, Header, HTTPException

from services.ingest.patient import S3MultipartStore, ScriptCatalog, UploadPolicy, create_patient_router
from services.ingest.patient.script import CheckinScript, Step
from shared.aws import AsyncClients, sync_client
from shared.identity import CredentialKind, Principal, Role
from shared.jobs import JobsRepository

PART = 64 * 1024
CLINIC = "clinic-north"


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", PART)


def link(job_id: str, patient_id: str = "patient-101", clinic: str = CLINIC, role: Role = Role.PATIENT_LINK):
    return Principal(subject=f"link-{job_id}", role=role, clinic_id=clinic, credential=CredentialKind.PATIENT_LINK,
                     patient_id=patient_id, job_id=job_id)


async def verify_link(authorization: str | None = Header(None)) -> Principal:
    """Stands for issue 12's verifier; every test overrides it with the principal it needs."""
    raise HTTPException(status_code=401, detail="authentication required")


def job_item(job_id: str, patient_id: str = "patient-101", clinic: str | None = CLINIC, status: str = "queued"):
    return {"job_id": job_id, "patient_id": patient_id, "status": status,
            "s3_key": f"uploads/{patient_id}/{job_id}/20261130T120000Z_checkin.webm", "filename": "checkin.webm",
            "content_type": "video/webm", "created_at": "2026-11-30T12:00:00.000000Z",
            "updated_at": "2026-11-30T12:00:00.000000Z", "progress": 0, "message": "Waiting for the upload",
            "metadata": {"clinic_id": clinic} if clinic else {}}


@asynccontextmanager
async def patient_api(settings, principal: Principal | None = None, max_bytes: int = 10 * PART,
                      script: CheckinScript | None = None):
    async with AsyncClients(settings) as clients:
        jobs = JobsRepository(clients.dynamodb, settings.jobs_table)
        store = S3MultipartStore(clients.s3, sync_client(settings, "s3"), settings.bucket)
        app = FastAPI()
        app.include_router(create_patient_router(
            link_principal=verify_link, jobs=jobs, store=store,
            scripts=ScriptCatalog(clinics={CLINIC: script} if script else {}),
            policy=UploadPolicy(max_bytes=max_bytes, part_bytes=PART, url_expiry_seconds=300),
            upload_origin=store.origin))
        if principal is not None:
            app.dependency_overrides[verify_link] = lambda: principal
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as http:
            yield http, jobs, store


def new_job_id() -> str:
    return "job-" + os.urandom(6).hex()


def put_parts(plan: dict, data: bytes, numbers: set[int] | None = None) -> None:
    with httpx.Client(timeout=30) as http:
        for part in plan["parts"]:
            if numbers is None or part["number"] in numbers:
                start = (part["number"] - 1) * plan["part_bytes"]
                response = http.put(part["url"], content=data[start:start + part["size"]])
                assert response.status_code == 200, response.text


def test_the_page_is_served_with_its_own_assets_and_a_strict_policy(aws_server):
    async def scenario():
        async with patient_api(aws_server) as (http, _, store):
            page = await http.get("/checkin")
            assert page.status_code == 200
            assert 'src="/checkin/static/checkin.js"' in page.text and 'data-api="/api/v1/checkin"' in page.text
            assert "http" not in page.text.replace('content="', "")  # no asset from anywhere else
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and f"connect-src 'self' {store.origin}" in policy
            assert page.headers["referrer-policy"] == "no-referrer"
            script = await http.get("/checkin/static/checkin.js")
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
            assert (await http.get("/checkin/static/..%2Frouter.py")).status_code == 404
            assert (await http.get("/checkin/static/router.py")).status_code == 404
    asyncio.run(scenario())


def test_a_link_without_a_valid_token_is_refused(aws_server):
    async def scenario():
        async with patient_api(aws_server) as (http, _, _):
            response = await http.get("/api/v1/checkin/session", headers={"Authorization": "Bearer expired"})
            assert response.status_code == 401
    asyncio.run(scenario())


def test_only_patient_links_may_call_it(aws_server):
    async def scenario():
        job_id = new_job_id()
        clinician = link(job_id, role=Role.CLINICIAN).model_copy(update={"credential": CredentialKind.BEARER})
        async with patient_api(aws_server, clinician) as (http, jobs, _):
            await jobs.create(job_item(job_id))
            assert (await http.get("/api/v1/checkin/session")).status_code == 403
    asyncio.run(scenario())


def test_another_clinics_or_patients_checkin_looks_exactly_like_a_missing_one(aws_server):
    async def scenario():
        ours, theirs, unowned = new_job_id(), new_job_id(), new_job_id()
        answers = []
        for principal in (link(ours, clinic="clinic-south"), link(ours, patient_id="patient-999"),
                          link(new_job_id()), link(unowned)):
            async with patient_api(aws_server, principal) as (http, jobs, _):
                await jobs.create(job_item(ours))
                await jobs.create(job_item(theirs, clinic="clinic-south"))
                await jobs.create(job_item(unowned, clinic=None))  # no clinic recorded: nobody's
                for path in ("/session", "/status"):
                    response = await http.get("/api/v1/checkin" + path)
                    answers.append((response.status_code, response.json()))
                response = await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 10})
                answers.append((response.status_code, response.json()))
        assert {a[0] for a in answers} == {404}
        assert len({str(a[1]) for a in answers}) == 1
    asyncio.run(scenario())


def test_session_shows_the_clinics_script_and_never_findings(aws_server):
    script = CheckinScript(prompts=(Step(id="voices", text="Have you heard voices this week?"),), dosing_steps=())
    async def scenario():
        job_id = new_job_id()
        async with patient_api(aws_server, link(job_id), script=script) as (http, jobs, _):
            await jobs.create({**job_item(job_id), "status": "completed", "progress": 100,
                               "results": {"risk_level": "high"}})
            await jobs.create(job_item(other := new_job_id()))
            session = (await http.get("/api/v1/checkin/session")).json()
            assert session["state"] == "done" and session["progress"] == 100
            assert [p["text"] for p in session["script"]["prompts"]] == ["Have you heard voices this week?"]
            assert "risk" not in str(session) and "results" not in session
        async with patient_api(aws_server, link(other, clinic=CLINIC)) as (http, _, _):
            session = (await http.get("/api/v1/checkin/session")).json()
            assert session["state"] == "awaiting_recording" and session["checkin_id"] == other
            assert [p["id"] for p in session["script"]["prompts"]] == [
                "mood", "medication", "side_effects", "sleep", "anything_else"]
            assert [p["id"] for p in session["script"]["dosing_steps"]] == [
                "show_pill", "place_on_tongue", "close_mouth", "show_empty"]
    asyncio.run(scenario())


def test_a_recording_uploads_in_parts_and_the_link_is_then_used(aws_server):
    data = os.urandom(3 * PART + 1234)
    async def scenario():
        job_id = new_job_id()
        async with patient_api(aws_server, link(job_id)) as (http, jobs, _):
            await jobs.create(job_item(job_id))
            response = await http.post("/api/v1/checkin/upload",
                                       json={"content_type": "video/webm;codecs=vp8,opus", "size": len(data)})
            assert response.status_code == 201, response.text
            plan = response.json()
            assert [(p["number"], p["size"]) for p in plan["parts"]] == [(1, PART), (2, PART), (3, PART), (4, 1234)]
            assert plan["content_type"] == "video/webm" and plan["done"] == []
            await asyncio.to_thread(put_parts, plan, data)
            done = await http.post("/api/v1/checkin/upload/complete",
                                   json={"upload_id": plan["upload_id"], "size": len(data)})
            assert done.status_code == 200 and done.json()["state"] == "received"
            again = await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 10})
            assert again.status_code == 409 and "already received" in again.json()["detail"]
            assert (await http.get("/api/v1/checkin/status")).json() == {"state": "received", "progress": 0}
        stored = sync_client(aws_server, "s3").get_object(Bucket=aws_server.bucket, Key=job_item(job_id)["s3_key"])
        assert stored["Body"].read() == data and stored["ContentType"] == "video/webm"
    asyncio.run(scenario())


def test_an_interrupted_upload_resumes_with_the_parts_s3_already_has(aws_server):
    data = os.urandom(3 * PART + 10)
    async def scenario():
        job_id = new_job_id()
        async with patient_api(aws_server, link(job_id)) as (http, jobs, store):
            await jobs.create(job_item(job_id))
            plan = (await http.post("/api/v1/checkin/upload",
                                    json={"content_type": "video/mp4", "size": len(data)})).json()
            await asyncio.to_thread(put_parts, plan, data, {1, 2})  # then the connection dropped
            early = await http.post("/api/v1/checkin/upload/complete",
                                    json={"upload_id": plan["upload_id"], "size": len(data)})
            assert early.status_code == 422 and "2 of 4 parts have not arrived" in early.json()["detail"]
            resumed = (await http.post("/api/v1/checkin/upload/resume",
                                       json={"upload_id": plan["upload_id"], "size": len(data)})).json()
            assert resumed["done"] == [1, 2] and [p["number"] for p in resumed["parts"]] == [3, 4]
            await asyncio.to_thread(put_parts, resumed, data)
            done = await http.post("/api/v1/checkin/upload/complete",
                                   json={"upload_id": plan["upload_id"], "size": len(data)})
            assert done.json()["state"] == "received"
            # a retried complete after success gets the same answer
            again = await http.post("/api/v1/checkin/upload/complete",
                                    json={"upload_id": plan["upload_id"], "size": len(data)})
            assert again.status_code == 200 and again.json()["state"] == "received"
        body = sync_client(aws_server, "s3").get_object(Bucket=aws_server.bucket, Key=job_item(job_id)["s3_key"])
        assert body["Body"].read() == data
    asyncio.run(scenario())


def test_an_upload_s3_no_longer_knows_cannot_be_resumed_but_can_start_again(aws_server):
    async def scenario():
        job_id = new_job_id()
        async with patient_api(aws_server, link(job_id)) as (http, jobs, store):
            await jobs.create(job_item(job_id))
            plan = (await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 100})).json()
            await store.abort(job_item(job_id)["s3_key"], plan["upload_id"])  # e.g. a lifecycle rule expired it
            gone = await http.post("/api/v1/checkin/upload/resume", json={"upload_id": plan["upload_id"], "size": 100})
            assert gone.status_code == 410 and "can no longer be resumed" in gone.json()["detail"]
            fresh = await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 100})
            assert fresh.status_code == 201 and fresh.json()["upload_id"] != plan["upload_id"]
            # starting again leaves one open upload for the check-in, not one per try
            again = (await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 100})).json()
            assert await store.open_uploads(job_item(job_id)["s3_key"]) == [again["upload_id"]]
    asyncio.run(scenario())


def test_oversized_or_wrongly_typed_recordings_are_refused_before_anything_is_stored(aws_server):
    async def scenario():
        job_id = new_job_id()
        async with patient_api(aws_server, link(job_id), max_bytes=4 * PART) as (http, jobs, store):
            await jobs.create(job_item(job_id))
            big = await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 4 * PART + 1})
            assert big.status_code == 422 and "the most that can be sent is" in big.json()["detail"]
            image = await http.post("/api/v1/checkin/upload", json={"content_type": "image/png", "size": 100})
            assert image.status_code == 422 and "cannot be sent" in image.json()["detail"]
            empty = await http.post("/api/v1/checkin/upload", json={"content_type": "video/webm", "size": 0})
            assert empty.status_code == 422
            assert await store.open_uploads(job_item(job_id)["s3_key"]) == []
    asyncio.run(scenario())


def test_each_part_url_is_signed_for_its_exact_length(aws_server):
    """S3 checks the SigV4 signature over the signed headers, content-length among
    them: a body of any other length gets SignatureDoesNotMatch. (moto does not
    check signatures, so this recomputes them with botocore's signer.)"""
    async def scenario():
        job_id = new_job_id()
        async with patient_api(aws_server, link(job_id)) as (http, jobs, _):
            await jobs.create(job_item(job_id))
            plan = (await http.post("/api/v1/checkin/upload",
                                    json={"content_type": "video/webm", "size": PART + 7})).json()
        return plan
    plan = asyncio.run(scenario())
    credentials = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    for part in plan["parts"]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(part["url"]).query)
        assert query["X-Amz-SignedHeaders"] == ["content-length;host"]
        assert resign(part["url"], part["size"], credentials) == query["X-Amz-Signature"][0]
        assert resign(part["url"], part["size"] + 1, credentials) != query["X-Amz-Signature"][0]
    assert [p["size"] for p in plan["parts"]] == [PART, 7]


def resign(url: str, content_length: int, credentials: Credentials) -> str:
    """The signature S3 computes for a PUT of `content_length` bytes to this presigned URL."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    unsigned = [(k, v[0]) for k, v in query.items() if k != "X-Amz-Signature"]
    request = AWSRequest(method="PUT", url=f"{parts.scheme}://{parts.netloc}{parts.path}?"
                         + urllib.parse.urlencode(unsigned),
                         headers={"host": parts.netloc, "content-length": str(content_length)})
    request.context["timestamp"] = query["X-Amz-Date"][0]
    signer = S3SigV4QueryAuth(credentials, "s3", query["X-Amz-Credential"][0].split("/")[2],
                              expires=int(query["X-Amz-Expires"][0]))
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)
