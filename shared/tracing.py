"""OpenTelemetry set-up and trace context across SQS.

The SDK reads the standard `OTEL_*` variables (service name, sampler, OTLP
endpoint). botocore's instrumentation does not carry context through SQS, so
`traceparent`/`tracestate` travel in MessageAttributes, set and read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_TRACE_KEYS = ("traceparent", "tracestate")


def configure_tracing(service_name: str) -> TracerProvider:
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def inject_message_attributes(attributes: dict | None = None) -> dict:
    """SQS MessageAttributes carrying the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    result = dict(attributes or {})
    for key in _TRACE_KEYS:
        if key in carrier:
            result[key] = {"DataType": "String", "StringValue": carrier[key]}
    return result


def extract_message_context(message_attributes: Mapping | None) -> Context:
    carrier = {
        key: value.get("StringValue", "")
        for key, value in (message_attributes or {}).items()
        if key in _TRACE_KEYS
    }
    return propagate.extract(carrier)


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
