"""Systems' and patients' credentials: API keys and one-time patient links, stored hashed.

- **API keys** (`X-API-Key: sdk_<id>_<secret>`), stored in `SchizodotApiKeys` as a SHA-256 of the
  secret (the secret is 256 random bits, so a slow hash adds nothing), each with a name, a role, a
  clinic, created/revoked times and an optional expiry. A revoked or expired key is refused at once.
- **Patient links** (`Authorization: Bearer spl_<secret>`), stored in `SchizodotPatientLinks` the same
  way, bound to one clinic, one patient and one check-in (job), short-lived. `consume` is a
  conditional write that succeeds once: exactly one upload.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

from shared.aws.dynamo import delete_queried, from_item, is_conditional_failure, items, to_item
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.identity.principal import CredentialKind, Principal, Role

API_KEY_PREFIX = "sdk_"
LINK_PREFIX = "spl_"
# Roles an API key may carry: systems upload, read results or integrate an EHR; people
# administer and operators use the cluster's own credentials.
API_KEY_ROLES = (Role.UPLOADER, Role.CLINICIAN, Role.EHR_INTEGRATION)
API_KEY_PATTERN = re.compile(r"^sdk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
LINK_PATTERN = re.compile(r"^spl_[A-Za-z0-9_-]{20,100}$")


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def now_epoch() -> int:
    return int(time.time())


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --- systems: API keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    clinic_id: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    expires_at: str | None = None  # ISO 8601 UTC; None: until revoked

    def view(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "role": self.role.value, "clinic_id": self.clinic_id,
                "created_at": self.created_at, "created_by": self.created_by, "revoked_at": self.revoked_at,
                "expires_at": self.expires_at}

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= iso(time.time() if now is None else now)


class ApiKeyStore(Protocol):
    async def create(self, name: str, role: Role, clinic_id: str, created_by: str,
                     expires_in: int | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret (`sdk_<id>_<secret>`), shown once and stored only hashed;
        refused from `expires_in` seconds on, when given."""

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret's SHA-256."""

    async def list_for_clinic(self, clinic_id: str) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, clinic_id: str) -> ApiKey | None:
        """Revoke a clinic's key (idempotent); None when the clinic has no such key."""


def new_api_key_secret() -> tuple[str, str, str]:
    """(key id, secret, the whole key)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return key_id, secret, f"{API_KEY_PREFIX}{key_id}_{secret}"


def new_api_key(name: str, role: Role, clinic_id: str, created_by: str,
                expires_in: int | None = None) -> tuple[ApiKey, str, str]:
    """(the key's record, its secret, the whole key) of a new key; every store makes them here."""
    key_id, secret, whole = new_api_key_secret()
    now = time.time()
    key = ApiKey(key_id, name, role, clinic_id, iso(now), created_by,
                 expires_at=iso(now + expires_in) if expires_in is not None else None)
    return key, secret, whole


def _api_key_of(item: dict[str, Any]) -> ApiKey:
    return ApiKey(item["key_id"], item["name"], Role(item["role"]), item["clinic_id"], item["created_at"],
                  item.get("created_by", ""), item.get("revoked_at"), item.get("expires_at"))


class DynamoApiKeys:
    """`ApiKeyStore` on the `SchizodotApiKeys` table (key `key_id`; GSI `clinic_id-created_at-index`)."""

    INDEX = "clinic_id-created_at-index"

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, name: str, role: Role, clinic_id: str, created_by: str,
                     expires_in: int | None = None) -> tuple[ApiKey, str]:
        key, secret, whole = new_api_key(name, role, clinic_id, created_by, expires_in)
        item = {k: v for k, v in key.view().items() if v is not None}
        item["secret_sha256"] = sha256(secret)
        await self._db.put_item(TableName=self._table, Item=to_item(item),
                                ConditionExpression="attribute_not_exists(key_id)")
        return key, whole

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        response = await self._db.get_item(TableName=self._table, Key={"key_id": {"S": key_id}}, ConsistentRead=True)
        if "Item" not in response:
            return None
        item = from_item(response["Item"])
        return _api_key_of(item), item["secret_sha256"]

    async def list_for_clinic(self, clinic_id: str) -> list[ApiKey]:
        request: dict[str, Any] = {"TableName": self._table, "IndexName": self.INDEX,
                                   "KeyConditionExpression": "clinic_id = :c",
                                   "ExpressionAttributeValues": {":c": {"S": clinic_id}}}
        return [_api_key_of(item) async for item in items(self._db, "query", **request)]

    async def revoke(self, key_id: str, clinic_id: str) -> ApiKey | None:
        try:
            response = await self._db.update_item(
                TableName=self._table, Key={"key_id": {"S": key_id}},
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="clinic_id = :c",
                ExpressionAttributeValues={":now": {"S": iso(time.time())}, ":c": {"S": clinic_id}},
                ReturnValues="ALL_NEW")
        except Exception as error:
            if is_conditional_failure(error):
                return None  # no such key, or another clinic's: the same answer
            raise
        return _api_key_of(from_item(response["Attributes"]))


# --- patients: one-time links ------------------------------------------------------------------


@dataclass(frozen=True)
class PatientLink:
    link_id: str  # SHA-256 of the secret
    clinic_id: str
    patient_id: ClinicPatientId  # the clinic's own id (links are stored under the PatientKey)
    job_id: str
    created_by: str
    expires_at: int  # epoch seconds (the table's TTL attribute)
    used_at: str | None = None

    def principal(self) -> Principal:
        return Principal(subject=f"link-{self.link_id[:16]}", role=Role.PATIENT_LINK, clinic_id=self.clinic_id,
                         credential=CredentialKind.PATIENT_LINK, patient_id=self.patient_id, job_id=self.job_id,
                         credential_id=self.link_id)


class PatientLinkStore(Protocol):
    async def issue(self, clinic_id: str, patient_id: str, job_id: str, created_by: str,
                    expires_in: int) -> tuple[PatientLink, str]:
        """A new link and its token (`spl_<secret>`), shown once and stored only hashed."""

    async def find(self, link_id: str) -> PatientLink | None: ...

    async def consume(self, link_id: str) -> bool:
        """Mark the link used; True exactly once (a conditional write), False if used or expired."""

    async def count_for_patient(self, patient_key: PatientKey) -> int: ...

    async def delete_for_patient(self, patient_key: PatientKey) -> int:
        """Erasure: remove every link of a patient; how many there were."""


def new_link_token() -> tuple[str, str]:
    token = LINK_PREFIX + secrets.token_urlsafe(32)
    return sha256(token), token


def _link_of(item: dict[str, Any]) -> PatientLink:
    stored = PatientKey.parse(item["patient_key"])
    clinic, local = stored.clinic_id, stored.patient
    return PatientLink(item["link_id"], clinic or item["clinic_id"], local, item["job_id"], item.get("created_by", ""),
                       int(item["expires_at"]), item.get("used_at"))


class DynamoPatientLinks:
    """`PatientLinkStore` on `SchizodotPatientLinks` (key `link_id`; GSI `patient_key-index`; TTL `expires_at`)."""

    INDEX = "patient_key-index"

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def issue(self, clinic_id: str, patient_id: str, job_id: str, created_by: str,
                    expires_in: int) -> tuple[PatientLink, str]:
        link_id, token = new_link_token()
        link = PatientLink(link_id, clinic_id, patient_id, job_id, created_by, now_epoch() + expires_in)
        await self._db.put_item(TableName=self._table, Item=to_item({
            "link_id": link_id, "clinic_id": clinic_id, "patient_key": str(PatientKey.of(clinic_id, patient_id)),
            "job_id": job_id, "created_by": created_by, "created_at": iso(time.time()),
            "expires_at": link.expires_at}), ConditionExpression="attribute_not_exists(link_id)")
        return link, token

    async def find(self, link_id: str) -> PatientLink | None:
        response = await self._db.get_item(TableName=self._table, Key={"link_id": {"S": link_id}},
                                           ConsistentRead=True)
        return _link_of(from_item(response["Item"])) if "Item" in response else None

    async def consume(self, link_id: str) -> bool:
        try:
            await self._db.update_item(
                TableName=self._table, Key={"link_id": {"S": link_id}}, UpdateExpression="SET used_at = :now",
                ConditionExpression="attribute_exists(link_id) AND attribute_not_exists(used_at) AND expires_at > :epoch",
                ExpressionAttributeValues={":now": {"S": iso(time.time())}, ":epoch": {"N": str(now_epoch())}})
            return True
        except Exception as error:
            if is_conditional_failure(error):
                return False
            raise

    async def count_for_patient(self, patient_key: PatientKey) -> int:
        response = await self._db.query(TableName=self._table, IndexName=self.INDEX, Select="COUNT",
                                        KeyConditionExpression="patient_key = :p",
                                        ExpressionAttributeValues={":p": {"S": str(PatientKey.parse(patient_key))}})
        return int(response.get("Count", 0))

    async def delete_for_patient(self, patient_key: PatientKey) -> int:
        return await delete_queried(self._db, self._table, {
            "IndexName": self.INDEX, "KeyConditionExpression": "patient_key = :p",
            "ExpressionAttributeValues": {":p": {"S": str(PatientKey.parse(patient_key))}}}, ("link_id",))


