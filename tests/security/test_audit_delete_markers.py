"""Finding 10 of issue 19: Object Lock keeps every version of an audit record but still lets
anyone with DeleteObject add a delete marker, which hides the key from a plain listing. The
reader lists versions: the hidden record is still returned, flagged `deleted`. On moto's server."""

from __future__ import annotations

import asyncio

import pytest

from shared.aws.clients import AsyncClients, sync_client
from shared.identity.audit import AuditRecord, S3AuditStore

pytestmark = pytest.mark.server


def test_audit_delete_marker_is_shown_and_flagged_as_tampering(aws_server):
    settings = aws_server
    records = [AuditRecord(record_id=f"{i:016x}", at=f"2026-02-0{i}T00:00:00.000000Z", service="test",
                           action="result.read", outcome="success", actor=f"dr-{i}", role="clinician",
                           clinic_id="clinic-hide", credential="bearer", patient_ref="pt-0000000000000001")
               for i in (1, 2, 3)]

    async def scenario():
        async with AsyncClients(settings) as aws:
            store = S3AuditStore(aws.s3, settings.audit_bucket)
            for record in records:
                await store.append(record)
            # who may delete (no version id: allowed under compliance mode) hides the second record
            await aws.s3.delete_object(Bucket=settings.audit_bucket, Key=records[1].key())
            everything = await store.query("clinic-hide", since=None, patient_ref_=None, limit=10, after=None)
            first_page = await store.query("clinic-hide", since=None, patient_ref_="pt-0000000000000001", limit=2,
                                           after=None)
            rest = await store.query("clinic-hide", since=None, patient_ref_=None, limit=2, after=first_page[1])
            since = await store.query("clinic-hide", since="2026-01-31T00:00:00Z", patient_ref_=None, limit=10,
                                      after=None)
            return everything, first_page, rest, since

    (found, more), (page, after), (rest, end), (since, _) = asyncio.run(scenario())
    assert [r["actor"] for r in since] == ["dr-1", "dr-2", "dr-3"] and since[1]["deleted"] is True
    listed = sync_client(settings, "s3").list_objects_v2(Bucket=settings.audit_bucket, Prefix="audit/clinic-hide/")
    assert records[1].key() not in [item["Key"] for item in listed.get("Contents", [])]  # hidden from a listing
    assert more is None and [r["actor"] for r in found] == ["dr-1", "dr-2", "dr-3"]
    assert found[1]["deleted"] is True and "deleted" not in found[0] and "deleted" not in found[2]
    assert [r["actor"] for r in page] == ["dr-1", "dr-2"] and after == records[1].key()
    assert [r["actor"] for r in rest] == ["dr-3"] and end is None
