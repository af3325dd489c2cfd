"""Where the console's sessions and sign-ins in progress are kept (sessions.py says what they are):
`SchizodotConsoleSessions` in DynamoDB, keyed by the SHA-256 of the session id (or `login:` and that of
the OIDC state), with the person index to end every session of one person; and an in-memory store
for tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from shared.aws.dynamo import from_item, is_conditional_failure, to_item
from shared.identity.principal import CredentialKind, Principal, Role
from shared.runtime.infra import SESSIONS_BY_PERSON_INDEX


@dataclass(frozen=True)
class ConsoleSession:
    session_id: str  # SHA-256 of the cookie's value
    subject: str
    role: str
    clinic_id: str
    display_name: str | None
    method: str  # how they signed in: "oidc:<provider id>" or "token"
    created_at: str
    last_seen: int  # epoch seconds
    idle_seconds: int
    expires_at: int  # epoch seconds: the absolute end (and the table's TTL)
    revoked_at: str | None = None

    def principal(self) -> Principal:
        return Principal(subject=self.subject, role=Role(self.role), clinic_id=self.clinic_id,
                         credential=CredentialKind.SESSION, display_name=self.display_name,
                         credential_id=self.session_id[:16])


@dataclass(frozen=True)
class LoginAttempt:
    """A sign-in at a provider, between the redirect there and the callback."""

    state_hash: str
    clinic_id: str
    provider_id: str
    nonce: str
    code_verifier: str
    browser_hash: str  # SHA-256 of the binding cookie the starting browser got
    next_path: str
    expires_at: int


class SessionStore(Protocol):
    async def put(self, session: ConsoleSession) -> None: ...

    async def get(self, session_id: str) -> ConsoleSession | None: ...

    async def touch(self, session_id: str, now: int) -> None:
        """Record activity (never revives a deleted or revoked session)."""

    async def delete(self, session_id: str) -> bool: ...

    async def of_clinic(self, clinic_id: str) -> list[ConsoleSession]: ...

    async def revoke_person(self, clinic_id: str, subject: str, at: str) -> int:
        """Mark every session of one person in the clinic revoked; how many were live."""

    async def put_login(self, attempt: LoginAttempt) -> None: ...

    async def take_login(self, state_hash: str) -> LoginAttempt | None:
        """The attempt, removed: a second take of the same state finds nothing."""


_SESSION_FIELDS = tuple(ConsoleSession.__dataclass_fields__)
_LOGIN_FIELDS = tuple(LoginAttempt.__dataclass_fields__)


def _session_of(item: dict[str, Any]) -> ConsoleSession:
    values = {k: item.get(k) for k in _SESSION_FIELDS}
    for k in ("last_seen", "idle_seconds", "expires_at"):
        values[k] = int(values[k])
    return ConsoleSession(**values)


class InMemorySessionStore:
    def __init__(self) -> None:
        self.sessions: dict[str, ConsoleSession] = {}
        self.logins: dict[str, LoginAttempt] = {}

    async def put(self, session: ConsoleSession) -> None:
        self.sessions[session.session_id] = session

    async def get(self, session_id: str) -> ConsoleSession | None:
        return self.sessions.get(session_id)

    async def touch(self, session_id: str, now: int) -> None:
        found = self.sessions.get(session_id)
        if found is not None and found.revoked_at is None:
            self.sessions[session_id] = replace(found, last_seen=now)

    async def delete(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None

    async def of_clinic(self, clinic_id: str) -> list[ConsoleSession]:
        return [s for s in self.sessions.values() if s.clinic_id == clinic_id]

    async def revoke_person(self, clinic_id: str, subject: str, at: str) -> int:
        ended = [s for s in self.sessions.values()
                 if s.clinic_id == clinic_id and s.subject == subject and s.revoked_at is None]
        for s in ended:
            self.sessions[s.session_id] = replace(s, revoked_at=at)
        return len(ended)

    async def put_login(self, attempt: LoginAttempt) -> None:
        self.logins[attempt.state_hash] = attempt

    async def take_login(self, state_hash: str) -> LoginAttempt | None:
        return self.logins.pop(state_hash, None)


class DynamoSessionStore:
    """`SessionStore` on `SchizodotConsoleSessions` (key `session_id`; GSI `clinic_id-subject-index`;
    TTL `expires_at`). Sign-ins in progress are items keyed `login:<state hash>` without a subject."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"session_id": {"S": session_id}}

    async def put(self, session: ConsoleSession) -> None:
        item = {k: v for k, v in asdict(session).items() if v is not None}
        await self._db.put_item(TableName=self._table, Item=to_item(item),
                                ConditionExpression="attribute_not_exists(session_id)")

    async def get(self, session_id: str) -> ConsoleSession | None:
        response = await self._db.get_item(TableName=self._table, Key=self._key(session_id), ConsistentRead=True)
        item = from_item(response["Item"]) if "Item" in response else None
        return _session_of(item) if item and "subject" in item else None

    async def touch(self, session_id: str, now: int) -> None:
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(session_id), UpdateExpression="SET last_seen = :now",
                ConditionExpression="attribute_exists(subject) AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":now": {"N": str(now)}})
        except Exception as error:
            if not is_conditional_failure(error):
                raise

    async def delete(self, session_id: str) -> bool:
        response = await self._db.delete_item(TableName=self._table, Key=self._key(session_id),
                                              ReturnValues="ALL_OLD")
        return "Attributes" in response

    async def _query(self, values: dict[str, Any], condition: str) -> list[ConsoleSession]:
        found: list[ConsoleSession] = []
        pages = self._db.get_paginator("query").paginate(
            TableName=self._table, IndexName=SESSIONS_BY_PERSON_INDEX, KeyConditionExpression=condition,
            ExpressionAttributeValues=to_item(values))
        async for page in pages:
            found += [_session_of(from_item(item)) for item in page.get("Items", [])]
        return found

    async def of_clinic(self, clinic_id: str) -> list[ConsoleSession]:
        return await self._query({":c": clinic_id}, "clinic_id = :c")

    async def revoke_person(self, clinic_id: str, subject: str, at: str) -> int:
        ended = 0
        for session in await self._query({":c": clinic_id, ":s": subject}, "clinic_id = :c AND subject = :s"):
            try:
                await self._db.update_item(
                    TableName=self._table, Key=self._key(session.session_id), UpdateExpression="SET revoked_at = :at",
                    ConditionExpression="attribute_exists(subject) AND attribute_not_exists(revoked_at)",
                    ExpressionAttributeValues={":at": {"S": at}})
                ended += 1
            except Exception as error:
                if not is_conditional_failure(error):
                    raise
        return ended

    async def put_login(self, attempt: LoginAttempt) -> None:
        item = {"session_id": f"login:{attempt.state_hash}", **asdict(attempt)}
        await self._db.put_item(TableName=self._table, Item=to_item(item),
                                ConditionExpression="attribute_not_exists(session_id)")

    async def take_login(self, state_hash: str) -> LoginAttempt | None:
        response = await self._db.delete_item(TableName=self._table, Key=self._key(f"login:{state_hash}"),
                                              ReturnValues="ALL_OLD")
        if "Attributes" not in response:
            return None
        item = from_item(response["Attributes"])
        return LoginAttempt(**{k: (int(item[k]) if k == "expires_at" else item[k]) for k in _LOGIN_FIELDS})
