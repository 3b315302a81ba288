"""The JSON log line format, shared by Django's LOGGING and gunicorn's logconfig_dict.

Plain data, no Django import: gunicorn's master reads it before Django is loaded.
"""

JSON_FORMATTER = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
    "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
}

# Adds the trace id to lines logged inside a traced request (payment_project.tracing).
TRACE_FILTER = {"()": "payment_project.tracing.TraceContextFilter"}


def _not_a_readiness_answer(record) -> bool:
    """Drop django.request's "Service Unavailable: /readyz" line: a not-ready pod answers
    503 on every probe, and payment_app.health logs the change of state once instead."""
    return getattr(getattr(record, "request", None), "path", None) != "/readyz"


NOT_READINESS_FILTER = {"()": "django.utils.log.CallbackFilter", "callback": _not_a_readiness_answer}

STDOUT_HANDLER = {
    "class": "logging.StreamHandler",
    "stream": "ext://sys.stdout",
    "formatter": "json",
    "filters": ["trace"],
}
