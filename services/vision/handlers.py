"""Vision: what the vision stage does with an analysis request.

It is a modality stage (shared/runtime/modality.py: fetch the job's media, run the
analyser off the event loop with progress, store its findings as
`artifacts/<job>/vision.json`, tell fusion); its analyser is `VisionAnalyser`
(facial emotion over time, expressivity, head movement, medication intake),
which writes the frames that show each intake step as evidence JPEGs next to
the job's artifacts (`artifacts/<job>/evidence/<step>.jpg`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from shared.aws.storage import ObjectStore
from shared.domain.checkin import artifact_key
from shared.runtime.modality import Analyse, Checkin, Progress, modality_stage

if TYPE_CHECKING:  # the analyser's models are the composition root's to load
    from services.vision.analysis import VisionAnalyser
    from services.vision.clinic_detectors import ClinicDetectors
    from services.vision.dosing import ClipSink
    from services.vision.evidence import EvidenceSink

VISION = modality_stage("vision")
S3_TIMEOUT_S = 60


def make_analyse(analyser: VisionAnalyser, storage: ObjectStore, loop: asyncio.AbstractEventLoop,
                 clinic_detectors: ClinicDetectors | None = None) -> Analyse:
    def analyse(path: Path, progress: Progress, checkin: Checkin) -> dict:
        detector, block = (clinic_detectors.for_clinic(checkin.clinic_id) if clinic_detectors is not None
                           else (None, None))
        own = {"pill_detector": detector} if detector is not None else {}
        result = analyser.analyse(path, progress, evidence=s3_evidence_sink(storage, checkin.job_id, loop),
                                  timeline=checkin.timeline, clip=s3_clip_sink(storage, checkin.job_id, loop), **own)
        if block is not None:  # the clinic's own detector: which version, its figures, live or why not
            result["compliance"]["clinic_detector"] = block
        return result

    return analyse


def s3_evidence_sink(storage: ObjectStore, job_id: str, loop: asyncio.AbstractEventLoop) -> EvidenceSink:
    """Writes evidence JPEGs next to the job's artifacts, from the analyser's thread."""
    return _artifact_sink(storage, job_id, loop, "evidence/", "image/jpeg")


def s3_clip_sink(storage: ObjectStore, job_id: str, loop: asyncio.AbstractEventLoop) -> ClipSink:
    """Writes the review clip next to the job's artifacts (`artifacts/<job>/review_clip.mp4`)."""
    return _artifact_sink(storage, job_id, loop, "", "video/mp4")


def _artifact_sink(storage: ObjectStore, job_id: str, loop: asyncio.AbstractEventLoop, folder: str,
                   content_type: str):
    def put(name: str, body: bytes) -> str:
        stem, dot, suffix = name.rpartition(".")
        key = artifact_key(job_id, folder + stem, dot + suffix)
        asyncio.run_coroutine_threadsafe(storage.put_bytes(key, body, content_type), loop).result(S3_TIMEOUT_S)
        return key

    return put
