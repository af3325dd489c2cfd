"""OpenTelemetry set-up, and one trace per job across SQS, S3 and the upload gap.

The SDK reads the standard `OTEL_*` variables: `OTEL_SERVICE_NAME`,
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP over
HTTP, e.g. Jaeger's :4318), `OTEL_TRACES_SAMPLER` / `_ARG`, `OTEL_BSP_*`,
`OTEL_TRACES_EXPORTER=none`.

How a job stays one trace:
- the API request that creates the job opens `create job` (`start_job_trace`);
  the job item keeps the trace id and context (`job_trace_fields`, under
  `metadata.pipeline`), because the S3 upload notification that starts ingest
  carries no trace context of its own;
- between stages, `traceparent`/`tracestate` travel in SQS MessageAttributes
  (botocore's instrumentation does not do this for SQS);
- an EHR event brings its own context, as a message attribute or as the
  CloudEvents distributed-tracing extension in the body.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind

TRACE_KEYS = ("traceparent", "tracestate")
JOB_TRACE_SPAN = "create job"

tracer = trace.get_tracer("schizodot")


class _DropDetachedAwsCalls(sampling.Sampler):
    """AWS calls made outside any job (empty long polls, queue-depth polling,
    the sweeper's scans, start-up look-ups) would each become a one-span trace
    and bury the jobs' traces; calls inside a job's trace are kept. Everything
    else is decided by the sampler `OTEL_TRACES_SAMPLER` configures."""

    def __init__(self, delegate: sampling.Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> sampling.SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return sampling.SamplingResult(sampling.Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"DropDetachedAwsCalls{{{self._delegate.get_description()}}}"


def configure_tracing(service_name: str) -> TracerProvider:
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    # The private helper is how the SDK itself reads OTEL_TRACES_SAMPLER(_ARG).
    provider = TracerProvider(resource=resource, sampler=_DropDetachedAwsCalls(sampling._get_from_env_or_default()))
    exporter_choice = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter_choice != "none" and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def instrument_aws() -> None:
    """Client spans for every S3, DynamoDB and SQS call (aiobotocore in the
    workers, botocore for any synchronous client)."""
    from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor, BotocoreInstrumentor

    for instrumentor in (AiobotocoreInstrumentor(), BotocoreInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


# --- trace context in SQS messages --------------------------------------------


def inject_message_attributes(attributes: dict | None = None) -> dict:
    """SQS MessageAttributes carrying the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    result = dict(attributes or {})
    for key in TRACE_KEYS:
        if key in carrier:
            result[key] = {"DataType": "String", "StringValue": carrier[key]}
    return result


def message_trace_carrier(message_attributes: Mapping | None) -> dict[str, str]:
    return {
        key: value.get("StringValue", "")
        for key, value in (message_attributes or {}).items()
        if key in TRACE_KEYS and isinstance(value, Mapping)
    }


def carrier_context(carrier: Mapping[str, Any] | None) -> Context | None:
    """The context a `traceparent`/`tracestate` carrier names; None when it names none."""
    if not carrier:
        return None
    clean = {key: str(carrier[key]) for key in TRACE_KEYS if isinstance(carrier.get(key), str) and carrier[key]}
    if "traceparent" not in clean:
        return None
    context = propagate.extract(clean)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


# --- one trace per job -----------------------------------------------------------


def job_trace_fields() -> dict[str, Any]:
    """`metadata.pipeline` fields naming the current trace: `trace_id` (for
    people: `schizodot submit` prints it, Jaeger finds the trace by it) and
    `trace_context` (for the stage that continues the trace after the upload).
    Empty when tracing is not configured."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "trace_context": {key: carrier[key] for key in TRACE_KEYS if key in carrier},
    }


@contextmanager
def start_job_trace(job_id: str, headers: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """The span a job's trace starts from: the request that creates the job.
    It is a child of the current span (FastAPI's own request span, which has
    continued a caller's `traceparent`); with no current span, a `traceparent`
    in `headers` is continued here. Yields `job_trace_fields()` of that span,
    e.g. to return the trace id."""
    parent = None
    if not trace.get_current_span().get_span_context().is_valid and headers:
        parent = carrier_context({key: headers.get(key) for key in TRACE_KEYS})
    with tracer.start_as_current_span(JOB_TRACE_SPAN, context=parent, kind=SpanKind.INTERNAL) as span:
        span.set_attribute("schizodot.job_id", job_id)
        span.set_attribute("schizodot.stage", "api")
        yield job_trace_fields()
