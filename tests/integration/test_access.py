"""The lock around the PHI, on the running stack with real signed tokens (issue 12):
every route x every role x own/other clinic, bad credentials, API keys, patient
links, the per-credential limit, the audit trail and erasure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schizodot.dev_identity import AUDIENCE, DEV_CLINIC, ISSUER, OTHER_CLINIC, DevIssuer
from schizodot.upload import upload_arguments
from shared.aws.dynamo import from_item
from shared.identity.middleware import UNAUTHENTICATED
from shared.runtime.events import CHECKIN_SUBMITTED
from tests.conftest import EHR_TEST_QUEUE

pytestmark = pytest.mark.slow

ROLES = ("uploader", "clinician", "clinic_admin", "ehr_integration", "operator", "patient-link")
USER = {("uploader", "own"): "dev-uploader", ("clinician", "own"): "dev-clinician",
        ("clinic_admin", "own"): "dev-admin", ("ehr_integration", "own"): "dev-ehr",
        ("uploader", "other"): "other-uploader", ("clinician", "other"): "other-clinician",
        ("clinic_admin", "other"): "other-admin", ("ehr_integration", "other"): "other-ehr",
        ("operator", "own"): "dev-operator", ("operator", "other"): "dev-operator"}


def _patient() -> str:
    return f"patient-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def world(running_stack, checkin_clip):
    """A completed check-in of a dev-clinic patient, an erasure and an API key of dev-clinic."""
    patient = _patient()
    job_id = running_stack.submit(checkin_clip, patient)
    assert running_stack.wait_for_job(job_id)["status"] == "completed"
    admin = running_stack.auth("dev-admin")
    erasure = httpx.delete(f"{running_stack.results_api}/api/v1/patients/{_patient()}", headers=admin, timeout=60)
    key = httpx.post(f"{running_stack.results_api}/api/v1/api-keys", headers=admin, timeout=10,
                     json={"name": "matrix-ehr", "role": "ehr_integration"})
    assert erasure.status_code == 200 and key.status_code == 201, (erasure.text, key.text)
    return {"patient": patient, "job": job_id, "erasure": erasure.json()["erasure_id"], "key": key.json()["key_id"]}


def _headers(stack, role: str, clinic: str) -> dict[str, str]:
    if role == "patient-link":  # a fresh link each time: the upload route uses it up
        issuer = "dev-uploader" if clinic == "own" else "other-uploader"
        link = httpx.post(f"{stack.api}/api/v1/patient-links", headers=stack.auth(issuer),
                          json={"patient_id": _patient()}, timeout=10)
        assert link.status_code == 201, link.text
        return {"Authorization": f"Bearer {link.json()['token']}"}
    return stack.auth(USER[(role, clinic)])


def _event(clinic: str) -> dict:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "urn:ehr:matrix", "type": CHECKIN_SUBMITTED,
            "datacontenttype": "application/json",
            "data": {"clinic_id": clinic, "patient_id": _patient(), "s3_key": f"incoming/{clinic}/x.mp4",
                     "content_type": "video/mp4"}}


# route -> (API, method, path, body) and, per role, the status for a caller of the
# resource's own clinic and of another clinic. Resources are dev-clinic's.
ALL_403 = {r: (403, 403) for r in ROLES}
READ = {**ALL_403, "clinician": (200, 404), "clinic_admin": (200, 404), "ehr_integration": (200, 404)}
# A patient of another clinic reads as a patient with nothing stored: 200, empty.
PATIENT_READ = {**ALL_403, "clinician": (200, 200), "clinic_admin": (200, 200), "ehr_integration": (200, 200)}
ADMIN_ONLY = {**ALL_403, "clinic_admin": (200, 404)}
ROUTES = {
    "ingest health": (("ingest", "GET", "/health", None), {r: (200, 200) for r in ROLES}),
    "results health": (("results", "GET", "/health", None), {r: (200, 200) for r in ROLES}),
    "create check-in": (("ingest", "POST", "/api/v1/analyze", "checkin"),
                        {**ALL_403, "uploader": (201, 201), "clinic_admin": (201, 201),
                         "ehr_integration": (201, 201)}),
    "issue patient link": (("ingest", "POST", "/api/v1/patient-links", "link"),
                           {**ALL_403, "uploader": (201, 201), "clinician": (201, 201),
                            "clinic_admin": (201, 201)}),
    "patient link upload": (("ingest", "POST", "/api/v1/patient-link/upload", "upload"),
                            {**ALL_403, "patient-link": (201, 201)}),
    "EHR event": (("ingest", "POST", "/api/v1/events", "event"), {**ALL_403, "ehr_integration": (202, 404)}),
    # the upload proxy (docs/uploads.md): the world's check-in has its recording, so its own clinic's
    # creators get 409 (never replaced); a link's check-in is another one, so the job is not its own
    "send a recording": (("ingest", "PUT", "/api/v1/uploads/{job}", None),
                         {**ALL_403, "uploader": (409, 404), "clinic_admin": (409, 404),
                          "ehr_integration": (409, 404), "patient-link": (404, 404)}),
    "ingest job status": (("ingest", "GET", "/api/v1/jobs/{job}", None), {**READ, "uploader": (200, 404)}),
    "job status": (("results", "GET", "/api/v1/jobs/{job}", None), READ),
    "job detail": (("results", "GET", "/api/v1/jobs/{job}/detail", None), READ),
    "result": (("results", "GET", "/api/v1/results/{job}", None), READ),
    "patient jobs": (("results", "GET", "/api/v1/patients/{patient}/jobs", None), PATIENT_READ),
    "patient results": (("results", "GET", "/api/v1/patients/{patient}/results", None), PATIENT_READ),
    "erase patient": (("results", "DELETE", "/api/v1/patients/{nobody}", None),
                      {**ALL_403, "clinic_admin": (200, 200)}),
    "erasure receipt": (("results", "GET", "/api/v1/erasures/{erasure}", None), ADMIN_ONLY),
    "audit trail": (("results", "GET", "/api/v1/audit", None), {**ALL_403, "clinic_admin": (200, 200)}),
    "list API keys": (("results", "GET", "/api/v1/api-keys", None), {**ALL_403, "clinic_admin": (200, 200)}),
    "create API key": (("results", "POST", "/api/v1/api-keys", "key"), {**ALL_403, "clinic_admin": (201, 201)}),
    "revoke API key": (("results", "DELETE", "/api/v1/api-keys/{key}", None), ADMIN_ONLY),
    # issue 13: the patient page's API (a link reads its own check-in, whichever clinic issued it) and the console
    "patient check-in session": (("ingest", "GET", "/api/v1/checkin/session", None),
                                 {**ALL_403, "patient-link": (200, 200)}),
    "patient check-in upload": (("ingest", "POST", "/api/v1/checkin/upload", "parts"),
                                {**ALL_403, "patient-link": (201, 201)}),
    # a part of an upload its check-in never started: gone, whichever clinic's link sends it
    "patient check-in part": (("ingest", "PUT", "/api/v1/checkin/upload/part?uploadId=none&partNumber=1", None),
                              {**ALL_403, "patient-link": (410, 410)}),
    "console patient list": (("results", "GET", "/console/", None),
                             {**ALL_403, "clinician": (200, 200), "clinic_admin": (200, 200)}),
    "console patient page": (("results", "GET", "/console/patients/{patient}", None),
                             {**ALL_403, "clinician": (200, 404), "clinic_admin": (200, 404)}),
    "console history export": (("results", "GET", "/console/patients/{patient}/history.csv", None),
                               {**ALL_403, "clinician": (200, 404), "clinic_admin": (200, 404)}),
}


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_by_every_role_of_the_own_and_another_clinic(running_stack, world, route):
    (api, method, path, body), expected = ROUTES[route]
    base = running_stack.api if api == "ingest" else running_stack.results_api
    failures = []
    for role in ROLES:
        for side, clinic in (("own", DEV_CLINIC), ("other", OTHER_CLINIC)):
            if route == "revoke API key" and side == "own":
                continue  # revoking is tested once, last, below (it is idempotent, but keep the key for "other")
            headers = _headers(running_stack, role, side)
            payload = {"checkin": {"patient_id": _patient(), "filename": "c.mp4", "content_type": "video/mp4"},
                       "link": {"patient_id": _patient()}, "upload": {"content_type": "video/webm"},
                       "parts": {"content_type": "video/webm", "size": 1000},
                       "event": _event(DEV_CLINIC), "key": {"name": "matrix", "role": "uploader"}}.get(body)
            url = base + path.format(job=world["job"], patient=world["patient"], nobody=_patient(),
                                     erasure=world["erasure"], key=world["key"])
            response = httpx.request(method, url, headers=headers, json=payload, timeout=60)
            want = expected[role][0 if side == "own" else 1]
            if response.status_code != want:
                failures.append(f"{role}/{side}: {response.status_code} (want {want}) {response.text[:120]}")
            elif want == 200 and route in ("patient jobs", "patient results") and side == "other":
                assert response.json()["count"] == 0  # like a patient that does not exist
            elif want == 403:
                assert response.json() == {"detail": "your role may not call this route"}
    assert not failures, "\n".join(failures)
    if route == "revoke API key":
        own = httpx.delete(f"{running_stack.results_api}/api/v1/api-keys/{world['key']}",
                           headers=running_stack.auth("dev-admin"), timeout=10)
        assert own.status_code == 200 and own.json()["revoked_at"]


def test_another_clinics_job_reads_exactly_like_a_missing_one(running_stack, world):
    for base in (running_stack.api, running_stack.results_api):
        theirs = httpx.get(f"{base}/api/v1/jobs/{world['job']}", headers=running_stack.auth("other-clinician"
                                                                                            if base != running_stack.api
                                                                                            else "other-uploader"))
        missing = httpx.get(f"{base}/api/v1/jobs/job-000000000000", headers=running_stack.auth("dev-clinician"))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"].replace(world["job"], "X") == missing.json()["detail"].replace(
            "job-000000000000", "X")


# --- bad credentials ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _forged_tokens(stack) -> dict[str, str]:
    issuer = DevIssuer(stack.config.state_dir)
    jwks = json.loads(issuer.jwks_path.read_text())
    public_pem = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dev-clinician", "exp": now + 600, "iat": now,
              "schizodot_role": "clinician", "schizodot_clinic": DEV_CLINIC}
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    hs256_with_public_key = signing_input + "." + _b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": issuer.kid}).encode())
    stranger = ec.generate_private_key(ec.SECP256R1())
    return {
        "malformed": "not.a.token",
        "garbage": "abc",
        "alg none": f"{none_header}.{_b64(json.dumps(claims).encode())}.",
        "HS256 signed with the public key": hs256_with_public_key,
        "wrong issuer": issuer.mint("dev-clinician", iss="https://evil.example"),
        "wrong audience": issuer.mint("dev-clinician", aud="another-api"),
        "expired": issuer.mint("dev-clinician", exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not yet valid": issuer.mint("dev-clinician", nbf=now + 3600),
        "unknown key id": jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "somebody-else"}),
        "right key id, wrong key": jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": issuer.kid}),
        "no role": issuer.mint("dev-clinician", schizodot_role="superuser"),
        "no clinic": issuer.mint("dev-clinician", schizodot_clinic=None),
        "an API key as a bearer token": "sdk_0123456789abcdef_" + "x" * 43,
        "unknown patient link": "spl_" + "y" * 43,
    }


@pytest.mark.parametrize("base", ["ingest", "results"])
def test_bad_credentials_are_401_and_say_nothing_more(running_stack, world, base):
    api = running_stack.api if base == "ingest" else running_stack.results_api
    paths = ["/api/v1/jobs/" + world["job"], "/api/v1/jobs/not-a-job", "/api/v1/nothing-here"]
    cases = {name: {"Authorization": f"Bearer {token}"} for name, token in _forged_tokens(running_stack).items()}
    cases.update({"no credential": {}, "basic auth": {"Authorization": "Basic ZGV2OmRldg=="},
                  "unknown API key": {"X-API-Key": "sdk_0123456789abcdef_" + "z" * 43},
                  "malformed API key": {"X-API-Key": "letmein"},
                  "two credentials": {"X-API-Key": "sdk_0123456789abcdef_" + "z" * 43,
                                      **running_stack.auth("dev-clinician")}})
    for name, headers in cases.items():
        for path in paths:
            response = httpx.get(api + path, headers=headers, timeout=10)
            assert response.status_code == 401, (name, path, response.text)
            assert response.json() == UNAUTHENTICATED and response.headers["www-authenticate"] == "Bearer", name
    good = httpx.get(api + paths[0], headers=running_stack.auth("dev-clinician"), timeout=10)
    assert good.status_code == 200  # the same request with a valid token


def test_an_api_key_works_until_revoked(running_stack, world):
    admin = running_stack.auth("dev-admin")
    created = httpx.post(f"{running_stack.results_api}/api/v1/api-keys", headers=admin, timeout=10,
                         json={"name": "ehr-bridge", "role": "ehr_integration"}).json()
    key = {"X-API-Key": created["api_key"]}
    url = f"{running_stack.results_api}/api/v1/results/{world['job']}"
    assert httpx.get(url, headers=key, timeout=10).status_code == 200
    listed = httpx.get(f"{running_stack.results_api}/api/v1/api-keys", headers=admin, timeout=10).json()
    assert created["key_id"] in {k["key_id"] for k in listed} and all("api_key" not in k for k in listed)
    stored = running_stack.client("dynamodb").get_item(TableName=running_stack.settings.api_keys_table,
                                                      Key={"key_id": {"S": created["key_id"]}})["Item"]
    assert created["api_key"].split("_", 2)[2] not in json.dumps(stored)  # only its hash is kept
    assert httpx.delete(f"{running_stack.results_api}/api/v1/api-keys/{created['key_id']}",
                        headers=running_stack.auth("other-admin"), timeout=10).status_code == 404
    assert httpx.delete(f"{running_stack.results_api}/api/v1/api-keys/{created['key_id']}", headers=admin,
                        timeout=10).status_code == 200
    revoked = httpx.get(url, headers=key, timeout=10)
    assert revoked.status_code == 401 and revoked.json() == UNAUTHENTICATED


def test_a_patient_link_gives_exactly_one_upload(running_stack, checkin_clip):
    patient = _patient()
    issued = httpx.post(f"{running_stack.api}/api/v1/patient-links", headers=running_stack.auth("dev-clinician"),
                        json={"patient_id": patient}, timeout=10).json()
    link = {"Authorization": f"Bearer {issued['token']}"}
    assert issued["url"].endswith(f"#token={issued['token']}")
    first = httpx.post(f"{running_stack.api}/api/v1/patient-link/upload", headers=link, timeout=10,
                       json={"content_type": "video/mp4"})
    assert first.status_code == 201, first.text
    form = first.json()
    uploaded = httpx.request(**upload_arguments(form, "c.mp4", checkin_clip.read_bytes(), "video/mp4", link),
                             timeout=60)
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    again = httpx.post(f"{running_stack.api}/api/v1/patient-link/upload", headers=link, timeout=10,
                       json={"content_type": "video/mp4"})
    assert again.status_code == 401 and again.json() == UNAUTHENTICATED  # reused
    # Used, it still reads its own check-in's state (the patient page's "received"), and nothing else.
    assert httpx.get(f"{running_stack.api}/api/v1/jobs/{issued['job_id']}", headers=link).status_code == 403
    job = running_stack.wait_for_job(issued["job_id"])
    assert job["status"] == "completed" and job["patient_id"].startswith(f"{DEV_CLINIC}.")  # the clinic, in the key


def test_checkin_creation_is_limited_per_credential(running_stack):
    token = running_stack.token("dev-uploader", sub=f"busy-app-{uuid.uuid4().hex[:6]}")
    # The limit is a fixed window on the minute (shared/identity/ratelimit.py): start early in one, so
    # every request below falls in the same window and exactly the configured 30 pass.
    if 60 - time.time() % 60 < 30:
        time.sleep(60 - time.time() % 60 + 0.5)
    window = int(time.time() // 60)
    statuses = []
    for _ in range(70):  # the stack allows 30 a minute per credential (INGEST_CHECKINS_PER_WINDOW)
        response = httpx.post(f"{running_stack.api}/api/v1/analyze", headers={"Authorization": f"Bearer {token}"},
                              json={"patient_id": _patient(), "filename": "c.mp4", "content_type": "video/mp4"},
                              timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert "too many check-ins" in response.json()["detail"]
            break
    assert int(time.time() // 60) == window, "the requests spilled into the next window"
    assert statuses == [201] * 30 + [429]
    # Another credential is not held back by this one.
    assert httpx.post(f"{running_stack.api}/api/v1/analyze", headers=running_stack.auth("dev-admin"), timeout=10,
                      json={"patient_id": _patient(), "filename": "c.mp4", "content_type": "video/mp4"}
                      ).status_code == 201


# --- audit and erasure ------------------------------------------------------------------------------


def _audit(stack, user: str = "dev-admin", **params) -> list[dict]:
    records, token = [], None
    while True:
        query = {**params, **({"next_token": token} if token else {})}
        page = httpx.get(f"{stack.results_api}/api/v1/audit", params=query, headers=stack.auth(user), timeout=30)
        assert page.status_code == 200, page.text
        records += page.json()["records"]
        token = page.json()["next_token"]
        if token is None:
            return records


def test_reads_and_writes_of_phi_are_audited_and_clinic_admins_query_them(running_stack, world):
    patient, job_id = world["patient"], world["job"]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    httpx.get(f"{running_stack.results_api}/api/v1/results/{job_id}", headers=running_stack.auth("dev-clinician"))
    httpx.get(f"{running_stack.results_api}/api/v1/results/{job_id}", headers=running_stack.auth("other-clinician"))
    records = _audit(running_stack, patient_id=patient)
    actions = [(r["action"], r["actor"], r["outcome"]) for r in records]
    assert ("checkin.create", "dev-uploader", "success") in actions
    assert ("result.read", "dev-clinician", "success") in actions
    read = next(r for r in records if r["action"] == "result.read" and r["at"] >= since)
    assert read["role"] == "clinician" and read["clinic_id"] == DEV_CLINIC and read["job_id"] == job_id
    assert read["request_id"] and read["patient_ref"].startswith("pt-") and patient not in json.dumps(records)
    # The other clinic's probe is in its own trail, as not found; never in dev-clinic's.
    theirs = [r for r in _audit(running_stack, "other-admin", since=since) if r["job_id"] == job_id]
    assert [(r["action"], r["outcome"]) for r in theirs] == [("result.read", "not_found")]
    # Paged: one record a page gives the same records.
    paged = [r["record_id"] for r in _audit(running_stack, patient_id=patient, limit=1)]
    assert paged == [r["record_id"] for r in records]
    # Reading the trail is itself audited (without a patient, so a listing never outruns itself).
    assert "audit.read" in {r["action"] for r in _audit(running_stack, since=since)}


def _everything_stored(stack, *, audit: bool = True) -> str:
    """Every object key and body in the buckets and every item of every table, as one text."""
    s3, dynamodb = stack.client("s3"), stack.client("dynamodb")
    texts = []
    for bucket in (stack.settings.bucket, *([stack.settings.audit_bucket] if audit else [])):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for version in page.get("Versions", []):
                texts.append(version["Key"])
                body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
                texts.append(body[:200_000].decode("latin-1"))
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            texts += [upload["Key"] for upload in page.get("Uploads", [])]
    for table in dynamodb.list_tables()["TableNames"]:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            texts += [json.dumps(from_item(item)) for item in page.get("Items", [])]
    return "\n".join(texts)


def _everything_queued(stack) -> str:
    """Every message body (and its attributes) on every queue of the stack, read through and released
    at once. The test EHR's inbound queue is left out: what was sent to the EHR is the EHR's, as a
    delivered webhook is the clinic's."""
    sqs = stack.client("sqs")
    texts = []
    for url in sqs.list_queues().get("QueueUrls", []):
        if url.endswith("/" + EHR_TEST_QUEUE):
            continue
        held = []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                           WaitTimeSeconds=0, MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                break
            for message in messages:
                texts.append(message["Body"] + json.dumps(message.get("MessageAttributes", {})))
                held.append(message["ReceiptHandle"])
        for handle in held:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return "\n".join(texts)


def _late_receipt(stack, erasure_id: str, timeout: float = 60) -> dict:
    """The erasure's receipt once its late sweep (RESULTS_ERASURE_SWEEP_DELAY_SECONDS=3) has run."""
    deadline = time.monotonic() + timeout
    while True:
        receipt = httpx.get(f"{stack.results_api}/api/v1/erasures/{erasure_id}",
                            headers=stack.auth("dev-admin"), timeout=10).json()
        if receipt.get("late") is not None or time.monotonic() > deadline:
            return receipt
        time.sleep(0.5)


def test_erasure_removes_everything_of_the_patient_and_nothing_of_another_clinics(running_stack, checkin_clip):
    patient = _patient()
    job_id = running_stack.submit(checkin_clip, patient)
    assert running_stack.wait_for_job(job_id)["status"] == "completed"
    httpx.post(f"{running_stack.api}/api/v1/patient-links", headers=running_stack.auth("dev-clinician"),
               json={"patient_id": patient}, timeout=10)
    # The other clinic's patient with the same id: its data must stay.
    theirs = httpx.post(f"{running_stack.api}/api/v1/patient-links", headers=running_stack.auth("other-uploader"),
                        json={"patient_id": patient}, timeout=10).json()
    before = _everything_stored(running_stack)
    assert running_stack.stored_key(patient) in before and f"artifacts/{job_id}/evidence/" in before

    erased = httpx.delete(f"{running_stack.results_api}/api/v1/patients/{patient}",
                          headers=running_stack.auth("dev-admin"), timeout=60)
    assert erased.status_code == 200, erased.text
    receipt = erased.json()
    assert receipt["status"] == "done" and receipt["patient_id"] == patient
    counts = receipt["counts"]
    assert counts["media"] == 1 and counts["results"] == 1 and counts["jobs"] == 2 and counts["patient_links"] == 1
    assert counts["clinic_patients"] == 1  # on the console's patient list until erased (its alerts go too)
    assert counts["artifacts"] >= 3 and counts["evidence_frames"] >= 1

    receipt_again = _late_receipt(running_stack, receipt["erasure_id"])
    assert receipt_again["counts"] == counts and receipt_again["late"] == {k: 0 for k in counts}
    after = _everything_stored(running_stack) + _everything_queued(running_stack)
    assert running_stack.stored_key(patient) not in after and patient not in after.replace(
        running_stack.stored_key(patient, OTHER_CLINIC), "")  # only the other clinic's namesake remains
    assert job_id not in _everything_stored(running_stack, audit=False)  # only the audit trail names the job
    assert running_stack.stored_key(patient, OTHER_CLINIC) in after  # the other clinic's patient is untouched
    assert running_stack.job(theirs["job_id"]) is not None

    trail = [(r["action"], r["outcome"]) for r in _audit(running_stack, patient_id=patient)]
    assert ("erasure.requested", "success") in trail and ("erasure.completed", "success") in trail
    completed = next(r for r in _audit(running_stack, patient_id=patient) if r["action"] == "erasure.completed")
    assert completed["detail"]["counts"] == counts

    again = httpx.delete(f"{running_stack.results_api}/api/v1/patients/{patient}",
                         headers=running_stack.auth("dev-admin"), timeout=60)
    assert again.status_code == 200 and set(again.json()["counts"].values()) == {0}  # idempotent


def _stage_state(job: dict | None, stage: str) -> str | None:
    return (((job or {}).get("metadata") or {}).get("pipeline") or {}).get("stages", {}).get(stage, {}).get("state")


def _stages_quiet(stack, timeout: float = 180) -> None:
    """Wait until no stage holds a message: whatever was analysing has finished (its writes found no job)."""
    sqs = stack.client("sqs")
    urls = [stack.queue_url(stack.settings.queue_name(stage)) for stage in ("ingest", "audio", "vision", "fusion",
                                                                           "results")]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = [sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"] for url in urls]
        if all(int(c["ApproximateNumberOfMessages"]) + int(c["ApproximateNumberOfMessagesNotVisible"]) == 0
               for c in counts):
            return
        time.sleep(0.5)
    raise AssertionError(f"the stages still hold messages after {timeout} s")


def test_erasure_of_a_patient_whose_checkin_is_being_analysed_leaves_nothing_once_the_analysis_ends(
        running_stack, checkin_clip):
    """Issue 24: the erasure and its late sweep with a job in flight. The patient's check-in is being
    analysed when the erasure runs; once the stages that were working on it have finished, nothing of
    the patient is left in any table, bucket (artifacts included) or queue."""
    patient = _patient()
    job_id = running_stack.submit(checkin_clip, patient)
    deadline = time.monotonic() + 120
    while True:  # until a modality stage is analysing it
        job = running_stack.job(job_id)
        if job and job["status"] == "processing" and "running" in (_stage_state(job, "audio"),
                                                                    _stage_state(job, "vision")):
            break
        assert job is None or job["status"] == "processing" or job["status"] == "queued", job
        assert time.monotonic() < deadline, "the check-in was never analysed"
        time.sleep(0.05)

    erased = httpx.delete(f"{running_stack.results_api}/api/v1/patients/{patient}",
                          headers=running_stack.auth("dev-admin"), timeout=60)
    assert erased.status_code == 200, erased.text
    receipt = erased.json()
    assert receipt["status"] == "done" and receipt["counts"]["jobs"] == 1 and receipt["counts"]["media"] == 1

    _stages_quiet(running_stack)  # the analysis that was running has ended
    late = _late_receipt(running_stack, receipt["erasure_id"])
    assert late["late"] is not None, late
    _stages_quiet(running_stack)
    stored = _everything_stored(running_stack, audit=False) + _everything_queued(running_stack)
    assert running_stack.stored_key(patient) not in stored and patient not in stored
    assert job_id not in stored  # no artifact, no job, no queued message of it: only the audit trail names it
    assert running_stack.job(job_id) is None


def test_erasure_removes_the_patients_alerts_and_their_place_on_the_clinics_list(running_stack, checkin_clip):
    """A clinic whose rules raise an alert on every check-in (tests/conftest.py, E2E_CLINIC)."""
    from tests.conftest import E2E_CLINIC

    def as_(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {running_stack.token(user, schizodot_clinic=E2E_CLINIC)}"}

    patient = _patient()
    with httpx.Client(timeout=60) as http:
        job = http.post(f"{running_stack.api}/api/v1/analyze", headers=as_("dev-uploader"), json={
            "patient_id": patient, "filename": "c.mp4", "content_type": "video/mp4"}).json()
        http.request(**upload_arguments(job, "c.mp4", checkin_clip.read_bytes(), "video/mp4",
                                        as_("dev-uploader"))).raise_for_status()
        assert running_stack.wait_for_job(job["job_id"])["status"] == "completed"
        alerts = running_stack.client("dynamodb").query(
            TableName=running_stack.settings.alerts_table, IndexName="patient_key-alert_id-index",
            KeyConditionExpression="patient_key = :p",
            ExpressionAttributeValues={":p": {"S": running_stack.stored_key(patient, E2E_CLINIC)}})["Items"]
        assert len(alerts) == 1
        assert http.get(f"{running_stack.results_api}/console/patients/{patient}", headers=as_("dev-clinician")
                        ).status_code == 200
        erased = http.delete(f"{running_stack.results_api}/api/v1/patients/{patient}", headers=as_("dev-admin"))
        assert erased.status_code == 200, erased.text
        assert erased.json()["counts"]["alerts"] == 1 and erased.json()["counts"]["clinic_patients"] == 1
        assert http.get(f"{running_stack.results_api}/console/patients/{patient}", headers=as_("dev-clinician")
                        ).status_code == 404  # gone from the console, as if never there
    for table in (running_stack.settings.alerts_table, running_stack.settings.clinic_patients_table):
        items = running_stack.client("dynamodb").scan(TableName=table)["Items"]
        assert patient not in json.dumps([from_item(i) for i in items]), table


def test_an_ehr_event_through_the_api_must_name_the_senders_clinic_and_media(running_stack, checkin_clip):
    key = f"incoming/{DEV_CLINIC}/{uuid.uuid4().hex}.mp4"
    running_stack.client("s3").put_object(Bucket=running_stack.settings.bucket, Key=key, Body=checkin_clip.read_bytes())
    event = _event(DEV_CLINIC)
    event["data"]["s3_key"] = key
    ehr = running_stack.auth("dev-ehr")
    accepted = httpx.post(f"{running_stack.api}/api/v1/events", headers=ehr, json=event, timeout=10)
    assert accepted.status_code == 202, accepted.text
    assert running_stack.wait_for_job(accepted.json()["job_id"])["status"] == "completed"
    elsewhere = {**event, "id": str(uuid.uuid4()), "data": {**event["data"], "s3_key": "uploads/x/y/z.mp4"}}
    refused = httpx.post(f"{running_stack.api}/api/v1/events", headers=ehr, json=elsewhere, timeout=10)
    assert refused.status_code == 422 and f"incoming/{DEV_CLINIC}/" in refused.json()["detail"]
    another = httpx.post(f"{running_stack.api}/api/v1/events", headers=running_stack.auth("other-ehr"),
                         json={**event, "id": str(uuid.uuid4())}, timeout=10)
    assert another.status_code == 404
