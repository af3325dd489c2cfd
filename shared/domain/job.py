"""The job record: one SchizodotJobs item, typed, and the rules of its lifecycle.

The stored item keeps the seed's attributes exactly (shared/docs/DYNAMODB_SCHEMA.md);
what the stages add lives under `metadata.pipeline`:

    metadata.pipeline
      source          "api" (an upload through the analyze API) or "event" (an EHR event)
      trace_id        the job's trace, for people (`schizodot submit` prints it)
      trace_context   traceparent/tracestate, for the stage that continues the trace after the upload
      media           what ingest found in the file (shared.runtime.media.MediaInfo)
      bucket          where the media is
      expected        the modalities to analyse ("audio", "vision")
      skipped         modality -> why it is not analysed, in words
      options         what the check-in asked for (shared.domain.options.CheckinOptions): analyses, thresholds
      timeline        when each prompt and dosing step was shown (shared.domain.timeline), as given; absent without one
      timeline_flags  ingest, once the recording's length is known: steps clipped or dropped at its end, in words
      weights         stage -> its share of the progress bar
      stages.<stage>  StageRecord: who holds the stage, its state, credit and outputs

`Job.from_item` / `Job.to_item` are the one translation between the two shapes;
`JobsRepository` (shared.aws.jobs) is the one place that reads and writes them, and
the functions here are the rules both it and the in-memory fake follow.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from shared.domain.checkin import CLINIC_METADATA_KEY, RESERVED_METADATA_KEY
from shared.domain.options import CheckinOptions
from shared.domain.patients import PatientKey
from shared.domain.timeline import CheckinTimeline

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
ACTIVE_STATUSES = (QUEUED, PROCESSING)
RUNNING, DONE = "running", "done"  # a stage record's states
PATIENT_JOBS_INDEX = "patient_id-created_at-index"  # the GSI: a patient's jobs by creation time

# Share of the progress bar each stage owns; audio and vision split theirs by
# what the media holds (see `plan_weights`). Results owns the rest up to 100.
INGEST_WEIGHT = 10
FUSION_WEIGHT = 10
RESULTS_WEIGHT = 10

Status = Literal["queued", "processing", "completed", "failed"]


def plan_weights(modalities: list[str]) -> dict[str, int]:
    analysis_share = 100 - INGEST_WEIGHT - FUSION_WEIGHT - RESULTS_WEIGHT
    split = {"audio": 25, "vision": 45} if set(modalities) == {"audio", "vision"} else {}
    weights = {"ingest": INGEST_WEIGHT, "fusion": FUSION_WEIGHT}
    for modality in modalities:
        weights[modality] = split.get(modality, analysis_share // len(modalities))
    return weights


class _Record(BaseModel):
    # Attributes this code does not know (written by a newer version) are kept as they are.
    model_config = ConfigDict(extra="allow")


class StageOutputs(_Record):
    """What a finished stage recorded (bench/pipeline.py reads compute_seconds)."""

    artifact_key: str | None = None  # its JSON document in S3, for the stages after it
    compute_seconds: float | None = None
    size_bytes: int | None = None  # ingest: the uploaded file


class Announcement(_Record):
    """An event a finished stage sent; a duplicate delivery sends it again from here."""

    to: str
    type: str
    data: dict[str, Any]


class StageRecord(_Record):
    """One stage's hold on one job: claimed under an SQS message id, credited as it goes."""

    state: Literal["running", "done"]
    message_id: str
    started_at: str | None = None
    finished_at: str | None = None
    credited: int = 0  # the part of the stage's weight already added to `progress`
    attempts: int = 1  # deliveries of the claiming message that ran the stage
    outputs: StageOutputs = Field(default_factory=StageOutputs)
    announced: list[Announcement] = Field(default_factory=list)


class PipelinePlan(_Record):
    """What ingest decides for the stages after it; only the fields given are written."""

    media: dict[str, Any] | None = None
    bucket: str | None = None
    expected: list[str] | None = None
    skipped: dict[str, str] | None = None
    weights: dict[str, int] | None = None
    timeline_flags: list[str] | None = None


class PipelineState(_Record):
    source: str | None = None
    trace_id: str | None = None
    trace_context: dict[str, str] | None = None
    media: dict[str, Any] | None = None
    bucket: str | None = None
    expected: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    weights: dict[str, int] = Field(default_factory=dict)
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    options: CheckinOptions = Field(default_factory=CheckinOptions)
    timeline: list[dict[str, Any]] | None = None  # shared.domain.timeline.CheckinTimeline.stored()
    timeline_flags: list[str] = Field(default_factory=list)  # shared.domain.timeline.TimelineWindows.flags

    @field_serializer("options")
    def _only_what_was_set(self, options: CheckinOptions) -> dict[str, Any]:
        return options.stored()

    def weight(self, stage: str) -> int:
        """The stage's share of the progress bar (ingest's is known before the plan is)."""
        return int(self.weights.get(stage, INGEST_WEIGHT if stage == "ingest" else 0))

    def done(self, stage: str) -> bool:
        record = self.stages.get(stage)
        return record is not None and record.state == DONE

    def artifact_key(self, stage: str) -> str:
        """Where a finished stage stored its document; KeyError if it stored none."""
        record = self.stages.get(stage)
        key = record.outputs.artifact_key if record else None
        if key is None:
            raise KeyError(f"the {stage} stage recorded no artifact")
        return key


class _JobState(BaseModel):
    """What a job item and its view in the APIs have in common."""

    job_id: str
    status: Status
    progress: int = 0
    message: str | None = None
    error: str | None = None
    filename: str | None = None
    content_type: str | None = None
    created_at: str
    updated_at: str
    started_at: str | None = None
    completed_at: str | None = None
    results: dict[str, Any] | None = None


class Job(_JobState, _Record):
    """A SchizodotJobs item. `metadata` is the caller's; the stages' state is `pipeline`.

    `patient_id` is the stored patient key (`clinic.patient`, shared.domain.patients.PatientKey), and
    the key is where the job's clinic is stored: `clinic_id` is read from it. Jobs written before
    that also carry `metadata.clinic_id`; it is read (and must agree with the key) but no longer
    written, except for a key without a clinic, where it is the only record of one."""

    patient_id: PatientKey
    s3_key: str
    clinic_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    pipeline: PipelineState = Field(default_factory=PipelineState)

    @model_validator(mode="after")
    def _clinic_of_the_key(self) -> "Job":
        keyed = self.patient_id.clinic_id
        if keyed is not None:
            if self.clinic_id is not None and self.clinic_id != keyed:
                raise ValueError("the job's clinic is not its patient key's clinic")
            self.clinic_id = keyed
        return self

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "Job":
        metadata = dict(item.get("metadata") or {})
        pipeline = metadata.pop(RESERVED_METADATA_KEY, None) or {}
        clinic = metadata.pop(CLINIC_METADATA_KEY, None)  # written by earlier versions beside the key
        return cls.model_validate({**item, "metadata": metadata, "pipeline": pipeline, "clinic_id": clinic})

    def to_item(self) -> dict[str, Any]:
        """The stored shape: what was set, with the pipeline state under `metadata.pipeline`; the
        clinic only in the patient key (in `metadata.clinic_id` only for a key without one)."""
        item = self.model_dump(mode="json", exclude_unset=True, exclude={"pipeline", "metadata", "clinic_id"})
        pipeline = self.pipeline.model_dump(mode="json", exclude_unset=True)
        unkeyed = self.patient_id.clinic_id is None and self.clinic_id
        clinic = {CLINIC_METADATA_KEY: self.clinic_id} if unkeyed else {}
        item["metadata"] = {**self.metadata, **clinic, RESERVED_METADATA_KEY: pipeline}
        return item

    def shown_item(self) -> dict[str, Any]:
        """The item as the APIs have always shown it: the clinic also as `metadata.clinic_id`."""
        item = self.to_item()
        if self.clinic_id:
            item["metadata"] = {**item["metadata"], CLINIC_METADATA_KEY: self.clinic_id}
        return item

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def same_checkin(self, other: "Job") -> bool:
        """Whether `other`, a job made again under this id (a redelivered event), is this job's clinic's
        and patient's: anything else is an id collision, never to be merged into this job."""
        return (self.clinic_id, self.patient_id) == (other.clinic_id, other.patient_id)

    def with_trace(self, trace_fields: dict[str, Any]) -> "Job":
        """This job continuing the trace `trace_fields` names (shared.runtime.tracing.job_trace_fields)."""
        if not trace_fields:
            return self
        pipeline = {**self.pipeline.model_dump(exclude_unset=True), **trace_fields}
        return self.model_copy(update={"pipeline": PipelineState.model_validate(pipeline)})


def new_job(
    job_id: str,
    *,
    patient_id: PatientKey | str,
    s3_key: str,
    filename: str,
    content_type: str,
    created_at: str,
    message: str,
    source: str,
    metadata: dict[str, Any] | None = None,
    trace_fields: dict[str, Any] | None = None,
    clinic_id: str | None = None,
    options: CheckinOptions | None = None,
    timeline: CheckinTimeline | None = None,
) -> Job:
    """A new job, status `queued`, as the schema's example item has it (`patient_id`: the stored key)."""
    chosen: dict[str, Any] = {"options": options.stored()} if options is not None and not options.is_default else {}
    if timeline is not None:
        chosen["timeline"] = timeline.stored()
    return Job.model_validate({
        "job_id": job_id, "patient_id": patient_id, "status": QUEUED, "s3_key": s3_key, "filename": filename,
        "clinic_id": clinic_id,
        "content_type": content_type, "created_at": created_at, "updated_at": created_at, "progress": 0,
        "message": message, "metadata": metadata or {},
        # The trace id for people, the trace context for the stage that continues after the upload.
        "pipeline": {"source": source, "stages": {}, **chosen, **(trace_fields or {})},
    })


# --- the lifecycle rules ------------------------------------------------------------------
#
# - a job moves queued -> processing -> completed | failed, and a completed or
#   failed job never changes again (every write is conditional on an active status);
# - each stage runs at most once per job: it claims `stages.<stage>` under its SQS
#   message id, so a redelivery of the same message resumes, while a duplicate
#   message finds the stage taken or done and stops;
# - progress only grows: each stage owns a share of 100 (its weight) and credits it
#   as it goes, remembering what it credited, so parallel stages and redeliveries
#   never double-count; 100 is set only on completion.


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"  # this message now runs the stage (first time or resumed)
    ALREADY_DONE = "already_done"  # finished earlier: re-announce downstream, then drop
    TAKEN = "taken"  # another message holds it: drop this duplicate
    JOB_FINISHED = "job_finished"  # completed or failed: nothing more to do
    NO_SUCH_JOB = "no_such_job"


def claim_outcome(job: Job | None, stage: str, message_id: str) -> ClaimOutcome:
    """What a claim of `stage` by `message_id` comes to on this job (CLAIMED: go ahead)."""
    if job is None:
        return ClaimOutcome.NO_SUCH_JOB
    if not job.active:
        return ClaimOutcome.JOB_FINISHED
    record = job.pipeline.stages.get(stage)
    if record is not None and record.state == DONE:
        return ClaimOutcome.ALREADY_DONE
    if record is not None and record.message_id != message_id:
        return ClaimOutcome.TAKEN
    return ClaimOutcome.CLAIMED  # a new claim, or the same message again after its delivery died


def credit_target(weight: int, fraction: float) -> int:
    """The credit `fraction` (0..1) of a stage's share is worth; the last point waits for the finish."""
    return min(math.floor(weight * max(0.0, min(fraction, 1.0))), max(weight - 1, 0))


def failure_message(error: str, stage: str | None) -> str:
    where = f" in {stage}" if stage else ""
    return f"Analysis failed{where}: {error}"


# --- the job as the APIs show it ----------------------------------------------------------


class JobStatus(_JobState):
    """A SchizodotJobs item as the APIs show it (access pattern 2)."""

    patient_id: str | None = None  # only where the caller is authenticated (the results API)
    s3_key: str | None = None
    modalities: list[str] = []
    skipped: dict[str, str] = {}
    trace_id: str | None = None

    @classmethod
    def of(cls, job: Job, *, with_patient: bool) -> "JobStatus":
        fields = job.model_dump(include=set(cls.model_fields) & set(Job.model_fields))
        fields["patient_id"] = job.patient_id.patient  # the clinic's own id, never the stored key
        if not with_patient:
            fields.pop("patient_id", None)
            fields.pop("s3_key", None)  # upload keys name the patient
        return cls(**fields, modalities=job.pipeline.expected, skipped=job.pipeline.skipped,
                   trace_id=job.pipeline.trace_id)
