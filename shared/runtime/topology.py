"""Who sends what to whom: the pipeline's shape, declared once.

    ingest -> audio | vision -> fusion -> results

Each stage has one SQS queue. The workers look up only the queues their stage
sends to (`resolve_queues`: least privilege), the runner refuses an event a
stage may not send, the embedded stack starts these stages, and the IAM
documents' tests check every role against this table.
"""

from __future__ import annotations

from shared.runtime.events import AnalysisRequested, FusionCompleted, ModalityAnalysed, StageEvent

STAGES = ("ingest", "audio", "vision", "fusion", "results")

# Queues of work that is not a check-in, and the service that consumes each: an
# erasure is a job of its own, resumable after a crash like any stage's message; an
# alert is delivered to the clinic's webhook or SNS topic from its queue, retried with
# back-off and dead-lettered like any message.
WORK_QUEUES: dict[str, str] = {"erasure": "results", "alerts": "results"}

# The stages each stage sends to.
PUBLISHES_TO: dict[str, tuple[str, ...]] = {
    "ingest": ("audio", "vision"),
    "audio": ("fusion",),
    "vision": ("fusion",),
    "fusion": ("results",),
    "results": (),
}

# The event a stage's queue carries from the stage before it. The ingest queue
# carries what comes from outside: S3 upload notifications and EHR check-in events.
CARRIES: dict[str, type[StageEvent]] = {
    "audio": AnalysisRequested,
    "vision": AnalysisRequested,
    "fusion": ModalityAnalysed,
    "results": FusionCompleted,
}


def check_route(sender: str, receiver: str, event: StageEvent) -> None:
    """Raise unless `sender` may send `event` to `receiver` (a programming error, never bad input)."""
    if receiver not in PUBLISHES_TO[sender]:
        raise ValueError(f"the {sender} stage does not send to {receiver} (see shared/runtime/topology.py)")
    if type(event) is not CARRIES[receiver]:
        raise ValueError(f"the {receiver} queue carries {CARRIES[receiver].__name__}, not {type(event).__name__}")
