"""The vision stage on in-memory adapters, with a stand-in analyser: the media is
analysed off the event loop, the evidence frames the analyser keeps are stored
next to the job's artifacts, the findings stored and fusion told. The analyser
itself, with its real models, is tested in test_analysis.py and test_pills.py."""

from __future__ import annotations

import asyncio
import uuid

from services.vision.handlers import VISION, make_analyse
from shared.domain.checkin import artifact_key, utc_now
from shared.domain.job import PipelinePlan, new_job, plan_weights
from shared.domain.timeline import CheckinTimeline
from shared.fakes import FakeAdapters, deliver
from shared.runtime.events import AnalysisRequested, ModalityAnalysed, encode_event
from shared.runtime.modality import ModalityDeps

JPEG = b"\xff\xd8\xff\xe0" + bytes(64)


MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(32)
TIMELINE = [{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
            {"step_id": "show_pill", "kind": "dosing", "shown_at_ms": 1000}]


class StandInAnalyser:
    def analyse(self, path, progress, evidence, timeline=None, clip=None):
        progress(0.5, "analysed 2/4 frames")
        key = evidence("hand_to_mouth.jpg", JPEG)
        self.timeline = timeline
        return {"frames_analysed": 4, "compliance": {"verification_status": "inconclusive",
                                                     "evidence_frames": [{"step": "hand_to_mouth", "key": key}],
                                                     "review_clip": {"key": clip("review_clip.mp4", MP4)}}}


def test_the_video_is_analysed_its_evidence_and_findings_stored_and_fusion_told(tmp_path):
    fakes = FakeAdapters()
    analyser = StandInAnalyser()
    clip = tmp_path / "checkin.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")

    async def scenario():
        job_id, key = f"job-{uuid.uuid4().hex[:12]}", "uploads/patient-001/x/checkin.mp4"
        await fakes.jobs.create(new_job(job_id, patient_id="patient-001", s3_key=key, filename="checkin.mp4",
                                        content_type="video/mp4", created_at=utc_now(), message="q", source="api",
                                        timeline=CheckinTimeline.of(TIMELINE)))
        ingest = await fakes.jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
        plan = PipelinePlan(expected=["audio", "vision"], weights=plan_weights(["audio", "vision"]))
        await fakes.jobs.finish_stage(ingest, "x", {}, plan)
        fakes.storage.put_file(key, clip)
        deps = ModalityDeps(fakes.storage, make_analyse(analyser, fakes.storage, asyncio.get_running_loop()),
                            None)
        request = AnalysisRequested(job_id=job_id)
        await deliver(fakes.runner(VISION, deps), encode_event(request.TYPE, "urn:schizodot:ingest", job_id, request))
        return job_id, await fakes.jobs.get(job_id)

    job_id, job = asyncio.run(scenario())
    evidence_key = f"artifacts/{job_id}/evidence/hand_to_mouth.jpg"
    assert fakes.storage.objects[(fakes.storage.bucket, evidence_key)] == (JPEG, "image/jpeg")
    artifact = asyncio.run(fakes.storage.get_json(artifact_key(job_id, "vision")))
    assert artifact["modality"] == "vision" and artifact["frames_analysed"] == 4
    assert artifact["compliance"]["evidence_frames"] == [{"step": "hand_to_mouth", "key": evidence_key}]
    clip_key = f"artifacts/{job_id}/review_clip.mp4"  # the review clip, next to the job's artifacts
    assert artifact["compliance"]["review_clip"] == {"key": clip_key}
    assert fakes.storage.objects[(fakes.storage.bucket, clip_key)] == (MP4, "video/mp4")
    assert analyser.timeline == CheckinTimeline.of(TIMELINE)  # the job's timeline reaches the analyser
    assert job.pipeline.stages["vision"].state == "done" and job.progress == 10 + 45
    assert fakes.publisher.sent == [("fusion", ModalityAnalysed(job_id=job_id, modality="vision"))]
