"""OpenTelemetry traces: off unless the standard OTEL_* variables ask for them.

Set OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
OTEL_TRACES_EXPORTER=otlp|console) and every request gets a span, with child spans for
its SQL statements; an incoming W3C `traceparent` header continues the caller's trace.
Everything else (service name, resource attributes, sampler, headers, timeouts) is read
by the SDK itself from the OTEL_* variables. OTEL_SDK_DISABLED=true turns it all off.

Two steps, because gunicorn preloads the app in the master and forks the workers:
`instrument()` patches Django and the database drivers before Django builds its
middleware chain (wsgi.py, in the master); `configure_worker()` creates the exporter and
its background thread in each worker after the fork. No Django import at module level:
gunicorn's logging config loads TraceContextFilter before Django is set up.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace

_EXPORTERS = ("otlp", "console")


def _exporter_name() -> str | None:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if name:
        if name == "none":
            return None
        if name not in _EXPORTERS:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: this service supports {', '.join(_EXPORTERS)} or none")
        return name
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return None


def enabled() -> bool:
    return _exporter_name() is not None


def instrument() -> None:
    """Patch Django and the database drivers (before the WSGI application is built)."""
    if not enabled():
        return
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    DjangoInstrumentor().instrument()
    SQLite3Instrumentor().instrument()
    try:
        import psycopg  # noqa: F401  (only with DATABASE_URL on PostgreSQL)
    except ImportError:
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor().instrument()


def configure_worker() -> None:
    """The tracer provider and its exporter, in the process that will use them."""
    name = _exporter_name()
    if name is None:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "payment"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` (W3C hex) to a log record made inside a traced request,
    so a charge's JSON log line leads to its trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True
