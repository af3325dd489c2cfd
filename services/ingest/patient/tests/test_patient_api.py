"""The patient check-in API against a real S3 and DynamoDB (moto's server over HTTP), mounted on the
ingest API as the service composes it, with real patient links issued through the API.

Parts go where the upload plan says, exactly as the phone sends them: to the API with the link's
token (upload mode "proxy", the default) or to presigned UploadPart URLs ("presigned").
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

from schizodot.dev_identity import DEV_CLINIC
from services.ingest.patient import ScriptCatalog
from services.ingest.patient.script import CheckinScript, Step
from services.ingest.patient.tests.app import ingest_site, update_job
from shared.aws.clients import sync_client

PART = 64 * 1024


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", PART)


@asynccontextmanager
async def patient_api(settings, state_dir, max_bytes: int = 10 * PART, script: CheckinScript | None = None,
                      upload_mode: str = "proxy"):
    async with ingest_site(settings, state_dir, part_bytes=PART, max_bytes=max_bytes, upload_mode=upload_mode,
                           scripts=ScriptCatalog(clinics={DEV_CLINIC: script} if script else {})) as site:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://ingest") as http:
            yield http, site


def new_patient() -> str:
    return "patient-" + os.urandom(4).hex()


async def issue_link(http, site, patient_id: str | None = None, **body) -> dict:
    """A check-in and its one-time link, as a clinician asks for it."""
    response = await http.post("/api/v1/patient-links", headers=site.auth("dev-clinician"),
                               json={"patient_id": patient_id or new_patient(), **body})
    assert response.status_code == 201, response.text
    return response.json()


def bearer(link: dict | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {link['token'] if isinstance(link, dict) else link}"}


async def put_parts(api: httpx.AsyncClient, link: dict, plan: dict, data: bytes, numbers: set[int] | None = None
                    ) -> None:
    """Send the plan's parts where it says: to the API with the link's token, or to S3's presigned URLs."""
    async with httpx.AsyncClient(timeout=30) as s3:
        for part in plan["parts"]:
            if numbers is None or part["number"] in numbers:
                start = (part["number"] - 1) * plan["part_bytes"]
                body = data[start:start + part["size"]]
                if plan["send_token"]:
                    assert part["url"].startswith("/api/v1/checkin/upload/part?")  # this API, never S3
                    response = await api.put(part["url"], content=body, headers=bearer(link))
                else:
                    response = await s3.put(part["url"], content=body)
                assert response.status_code == 200, response.text


def test_the_page_is_served_with_its_own_assets_and_a_strict_policy(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            page = await http.get("/checkin")  # no credential: the page holds no PHI; the token is in the fragment
            assert page.status_code == 200
            assert 'src="/checkin/static/checkin.js"' in page.text and 'data-api="/api/v1/checkin"' in page.text
            assert "http" not in page.text.replace('content="', "")  # no asset from anywhere else
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "connect-src 'self';" in policy  # parts go to this API
            assert page.headers["referrer-policy"] == "no-referrer"
            script = await http.get("/checkin/static/checkin.js")
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
            assert (await http.get("/checkin/static/..%2Frouter.py")).status_code == 404
            assert (await http.get("/checkin/static/router.py")).status_code == 404
            assert (await http.get("/checkin/other")).status_code == 401  # only the page itself is open
        async with patient_api(aws_server, tmp_path, upload_mode="presigned") as (http, site):
            policy = (await http.get("/checkin")).headers["content-security-policy"]
            assert f"connect-src 'self' {site.store.origin};" in policy  # parts go to S3's presigned URLs
    asyncio.run(scenario())


def test_a_link_without_a_valid_token_is_refused(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, _):
            for token in ("expired", "spl_" + "x" * 43):
                response = await http.get("/api/v1/checkin/session", headers=bearer(token))
                assert response.status_code == 401 and response.json() == {"detail": "authentication required"}
            assert (await http.get("/api/v1/checkin/session")).status_code == 401
    asyncio.run(scenario())


def test_only_patient_links_may_call_it(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            response = await http.get("/api/v1/checkin/session", headers=site.auth("dev-clinician"))
            assert response.status_code == 403 and response.json() == {"detail": "your role may not call this route"}
    asyncio.run(scenario())


def test_another_clinics_or_patients_checkin_looks_exactly_like_a_missing_one(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            ours = await issue_link(http, site)
            job = await site.jobs.get(ours["job_id"])
            patient = job.patient_id.split(".", 1)[1]
            links = site.access.links
            tokens = [(await links.issue("other-clinic", patient, ours["job_id"], "t", 600))[1],  # another clinic's
                      (await links.issue(DEV_CLINIC, "patient-999", ours["job_id"], "t", 600))[1],  # another patient's
                      (await links.issue(DEV_CLINIC, patient, "job-000000000000", "t", 600))[1]]  # no such check-in
            answers = []
            for token in tokens:
                for path in ("/session", "/status"):
                    response = await http.get("/api/v1/checkin" + path, headers=bearer(token))
                    answers.append((response.status_code, response.json()))
                response = await http.post("/api/v1/checkin/upload", headers=bearer(token),
                                           json={"content_type": "video/webm", "size": 10})
                answers.append((response.status_code, response.json()))
            assert {a[0] for a in answers} == {404}
            assert len({str(a[1]) for a in answers}) == 1
    asyncio.run(scenario())


def test_session_shows_the_clinics_script_and_never_findings(aws_server, tmp_path):
    script = CheckinScript(prompts=(Step(id="voices", text="Have you heard voices this week?"),), dosing_steps=())
    async def scenario():
        async with patient_api(aws_server, tmp_path, script=script) as (http, site):
            done = await issue_link(http, site)
            update_job(aws_server, done["job_id"], status="completed", progress=100, results={"risk_level": "high"})
            session = (await http.get("/api/v1/checkin/session", headers=bearer(done))).json()
            assert session["state"] == "done" and session["progress"] == 100
            assert [p["text"] for p in session["script"]["prompts"]] == ["Have you heard voices this week?"]
            assert "risk" not in str(session) and "results" not in session
        async with patient_api(aws_server, tmp_path) as (http, site):
            other = await issue_link(http, site)
            session = (await http.get("/api/v1/checkin/session", headers=bearer(other))).json()
            assert session["state"] == "awaiting_recording" and session["checkin_id"] == other["job_id"]
            assert [p["id"] for p in session["script"]["prompts"]] == [
                "mood", "medication", "side_effects", "sleep", "anything_else"]
            assert [p["id"] for p in session["script"]["dosing_steps"]] == [
                "show_pill", "place_on_tongue", "close_mouth", "show_empty"]
    asyncio.run(scenario())


def test_a_recording_uploads_in_parts_and_the_link_is_then_used(aws_server, tmp_path):
    data = os.urandom(3 * PART + 1234)
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            link = await issue_link(http, site, options={"analyses": ["vision"]})
            job = await site.jobs.get(link["job_id"])
            assert job.pipeline.options.analyses == ("vision",)  # the link's check-in keeps its options
            response = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                       json={"content_type": "video/webm;codecs=vp8,opus", "size": len(data)})
            assert response.status_code == 201, response.text
            plan = response.json()
            assert [(p["number"], p["size"]) for p in plan["parts"]] == [(1, PART), (2, PART), (3, PART), (4, 1234)]
            assert plan["content_type"] == "video/webm" and plan["done"] == []
            await put_parts(http, link, plan, data)
            done = await http.post("/api/v1/checkin/upload/complete", headers=bearer(link),
                                   json={"upload_id": plan["upload_id"], "size": len(data)})
            assert done.status_code == 200 and done.json()["state"] == "received"
            # the link's one recording is handed over: it writes nothing more, by either upload route
            for path, body in (("/api/v1/checkin/upload", {"content_type": "video/webm", "size": 10}),
                               ("/api/v1/checkin/upload/complete", {"upload_id": plan["upload_id"], "size": len(data)}),
                               ("/api/v1/patient-link/upload", {"content_type": "video/webm"})):
                again = await http.post(path, headers=bearer(link), json=body)
                assert again.status_code == 401, path
            # ... and still reads its check-in's state, for the page's "received" and "thank you"
            assert (await http.get("/api/v1/checkin/status", headers=bearer(link))).json() == {
                "state": "received", "progress": 0}
            trail, _ = await site.access.audit.query(DEV_CLINIC, since=None, patient_ref_=None, limit=1000, after=None)
            mine = [r["action"] for r in trail if r["job_id"] == link["job_id"]]
            assert mine == ["checkin.link_issued", "checkin.upload_started", "checkin.recording_received"]
            return job.s3_key
    key = asyncio.run(scenario())
    stored = sync_client(aws_server, "s3").get_object(Bucket=aws_server.bucket, Key=key)
    assert stored["Body"].read() == data and stored["ContentType"] == "video/webm"
    assert stored["ServerSideEncryption"] == "aws:kms"  # the bucket's default: the page asks for none


def test_a_link_used_for_the_single_presigned_post_cannot_also_send_parts(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path, upload_mode="presigned") as (http, site):
            link = await issue_link(http, site)
            form = await http.post("/api/v1/patient-link/upload", headers=bearer(link),
                                   json={"content_type": "video/mp4"})
            assert form.status_code == 201
            parts = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "video/webm", "size": 10})
            assert parts.status_code == 401  # one recording per link, whichever way it is sent
            # a recording that arrived by another way also closes the check-in to a fresh link's upload
            fresh = await issue_link(http, site)
            job = await site.jobs.get(fresh["job_id"])
            sync_client(aws_server, "s3").put_object(Bucket=aws_server.bucket, Key=job.s3_key, Body=b"x" * 100)
            for path, body in (("/api/v1/checkin/upload", {"content_type": "video/webm", "size": 10}),
                               ("/api/v1/patient-link/upload", {"content_type": "video/webm"})):
                refused = await http.post(path, headers=bearer(fresh), json=body)
                assert refused.status_code == 409 and "already received" in refused.json()["detail"], path
    asyncio.run(scenario())


def test_an_interrupted_upload_resumes_with_the_parts_s3_already_has(aws_server, tmp_path):
    data = os.urandom(3 * PART + 10)
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            link = await issue_link(http, site)
            plan = (await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "video/mp4", "size": len(data)})).json()
            await put_parts(http, link, plan, data, {1, 2})  # then the connection dropped
            early = await http.post("/api/v1/checkin/upload/complete", headers=bearer(link),
                                    json={"upload_id": plan["upload_id"], "size": len(data)})
            assert early.status_code == 422 and "2 of 4 parts have not arrived" in early.json()["detail"]
            resumed = (await http.post("/api/v1/checkin/upload/resume", headers=bearer(link),
                                       json={"upload_id": plan["upload_id"], "size": len(data)})).json()
            assert resumed["done"] == [1, 2] and [p["number"] for p in resumed["parts"]] == [3, 4]
            await put_parts(http, link, resumed, data)
            done = await http.post("/api/v1/checkin/upload/complete", headers=bearer(link),
                                   json={"upload_id": plan["upload_id"], "size": len(data)})
            assert done.json()["state"] == "received"
            return (await site.jobs.get(link["job_id"])).s3_key
    key = asyncio.run(scenario())
    body = sync_client(aws_server, "s3").get_object(Bucket=aws_server.bucket, Key=key)
    assert body["Body"].read() == data


def test_an_upload_s3_no_longer_knows_cannot_be_resumed_but_can_start_again(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            link = await issue_link(http, site)
            key = (await site.jobs.get(link["job_id"])).s3_key
            plan = (await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "video/webm", "size": 100})).json()
            await site.store.abort(key, plan["upload_id"])  # e.g. a lifecycle rule expired it
            gone = await http.post("/api/v1/checkin/upload/resume", headers=bearer(link),
                                   json={"upload_id": plan["upload_id"], "size": 100})
            assert gone.status_code == 410 and "can no longer be resumed" in gone.json()["detail"]
            fresh = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "video/webm", "size": 100})
            assert fresh.status_code == 201 and fresh.json()["upload_id"] != plan["upload_id"]
            # starting again leaves one open upload for the check-in, not one per try
            again = (await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                     json={"content_type": "video/webm", "size": 100})).json()
            assert await site.store.open_uploads(key) == [again["upload_id"]]
    asyncio.run(scenario())


def test_oversized_or_wrongly_typed_recordings_are_refused_before_anything_is_stored(aws_server, tmp_path):
    async def scenario():
        async with patient_api(aws_server, tmp_path, max_bytes=4 * PART) as (http, site):
            link = await issue_link(http, site)
            big = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                  json={"content_type": "video/webm", "size": 4 * PART + 1})
            assert big.status_code == 422 and "the most that can be sent is" in big.json()["detail"]
            image = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "image/png", "size": 100})
            assert image.status_code == 422 and "cannot be sent" in image.json()["detail"]
            empty = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "video/webm", "size": 0})
            assert empty.status_code == 422
            assert await site.store.open_uploads((await site.jobs.get(link["job_id"])).s3_key) == []
    asyncio.run(scenario())


def test_each_part_url_is_signed_for_its_exact_length(aws_server, tmp_path):
    """S3 checks the SigV4 signature over the signed headers, content-length among
    them: a body of any other length gets SignatureDoesNotMatch. (moto does not
    check signatures, so this recomputes them with botocore's signer.)"""
    async def scenario():
        async with patient_api(aws_server, tmp_path, upload_mode="presigned") as (http, site):
            link = await issue_link(http, site)
            return (await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                    json={"content_type": "video/webm", "size": PART + 7})).json()
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


def test_the_pages_timeline_is_kept_on_the_checkin_and_a_bad_one_refused_before_anything_is_stored(
        aws_server, tmp_path):
    timeline = [{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
                {"step_id": "show_pill", "kind": "dosing", "shown_at_ms": 30500}]

    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            link = await issue_link(http, site)
            refused = await http.post("/api/v1/checkin/upload", headers=bearer(link), json={
                "content_type": "video/webm", "size": 10, "timeline": list(reversed(timeline))})
            assert refused.status_code == 422 and "out of order" in refused.text, refused.text
            assert (await site.jobs.get(link["job_id"])).pipeline.timeline is None
            started = await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                      json={"content_type": "video/webm", "size": 10, "timeline": timeline})
            assert started.status_code == 201, started.text
            return await site.jobs.get(link["job_id"])

    job = asyncio.run(scenario())
    assert job.pipeline.timeline == timeline and job.status == "queued"


def test_a_link_past_its_expiry_is_refused_and_a_longer_lifetime_than_the_cap_is_capped(aws_server, tmp_path):
    """A link's lifetime is `min(asked, INGEST_PATIENT_LINK_MAX_SECONDS)` (7 days by default): asking for a
    year gets a link that dies in 7 days. A link whose stored expiry has passed is refused (401) for reads and
    for its upload alike, as an unknown one is (the TTL sweep may not have removed it yet)."""
    from datetime import datetime, timezone

    cap = 7 * 24 * 3600

    async def scenario():
        async with patient_api(aws_server, tmp_path) as (http, site):
            before = int(datetime.now(timezone.utc).timestamp())
            asked_a_year = await issue_link(http, site, expires_in=365 * 24 * 3600)
            after = int(datetime.now(timezone.utc).timestamp())
            shown = datetime.strptime(asked_a_year["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            assert before + cap - 1 <= shown.timestamp() <= after + cap
            stored = await site.access.links.find(_link_id(asked_a_year["token"]))
            assert stored is not None and before + cap <= stored.expires_at <= after + cap

            asked_an_hour = await issue_link(http, site, expires_in=3600)  # under the cap: kept as asked
            stored = await site.access.links.find(_link_id(asked_an_hour["token"]))
            assert before + 3600 <= stored.expires_at <= after + 1 + 3600

            too_short = await http.post("/api/v1/patient-links", headers=site.auth("dev-clinician"),
                                        json={"patient_id": new_patient(), "expires_in": 59})
            assert too_short.status_code == 422

            link = await issue_link(http, site)
            assert (await http.get("/api/v1/checkin/session", headers=bearer(link))).status_code == 200
            sync_client(aws_server, "dynamodb").update_item(  # its expiry passes (a second ago)
                TableName=aws_server.patient_links_table, Key={"link_id": {"S": _link_id(link["token"])}},
                UpdateExpression="SET expires_at = :past",
                ExpressionAttributeValues={":past": {"N": str(int(datetime.now(timezone.utc).timestamp()) - 1)}})
            for response in (await http.get("/api/v1/checkin/session", headers=bearer(link)),
                             await http.post("/api/v1/checkin/upload", headers=bearer(link),
                                             json={"content_type": "video/webm", "size": 10}),
                             await http.post("/api/v1/patient-link/upload", headers=bearer(link),
                                             json={"content_type": "video/webm"})):
                assert response.status_code == 401 and response.json() == {"detail": "authentication required"}
            assert not await site.access.links.consume(_link_id(link["token"]))  # nor can it be used up
    asyncio.run(scenario())


def _link_id(token: str) -> str:
    from shared.identity.credentials import sha256

    return sha256(token)
