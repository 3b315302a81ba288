"""OpenTelemetry traces from the real server: off by default, on with the standard OTEL_*
variables, continuing the caller's W3C trace context, exported over OTLP/HTTP to a
receiver in the test, and the trace id in the charge's JSON log line."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from payment_project import tracing
from harness.server import Server, free_port

pytestmark = pytest.mark.server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self):
        self.spans: list = []
        self.paths: list[str] = []

        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend((resource.resource, span) for span in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory, receiver):
    srv = Server(
        tmp_path_factory.mktemp("traced"),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_SERVICE_NAME": "payment-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    srv.start()
    yield srv
    srv.stop()


def charge_log_lines(server: Server) -> list[dict]:
    return [line for line in server.log_records() if line.get("message") == "charge attempt"]


def test_off_unless_configured(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER",
                 "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.enabled()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.enabled()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing.enabled()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.enabled()


def test_charge_continues_the_callers_trace_and_logs_its_id(traced, receiver):
    reply = traced.charge(extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert reply.status == 201
    attempt_id = reply.json()["id"]

    deadline = time.monotonic() + 30
    ours = []
    while time.monotonic() < deadline:
        ours = [(res, s) for res, s in receiver.spans if s.trace_id.hex() == TRACE_ID]
        if any(s.parent_span_id.hex() == PARENT_ID for _, s in ours) and len(ours) >= 2:
            break
        time.sleep(0.2)
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    (server_span,) = [s for _, s in ours if s.parent_span_id.hex() == PARENT_ID]
    assert server_span.kind == server_span.SPAN_KIND_SERVER
    assert "POST" in server_span.name
    # The database statement is a child span of the request, in the same trace.
    sql = [s for _, s in ours if s.parent_span_id == server_span.span_id]
    assert any("INSERT" in s.name or any(a.key == "db.statement" and "INSERT" in a.value.string_value
                                         for a in s.attributes) for s in sql), [s.name for s in sql]
    resource = {a.key: a.value.string_value for a in ours[0][0].attributes}
    assert resource["service.name"] == "payment-test"

    (line,) = [line for line in charge_log_lines(traced) if line["attempt_id"] == attempt_id]
    assert line["trace_id"] == TRACE_ID
    assert line["span_id"] == server_span.span_id.hex()


def test_a_charge_without_a_caller_trace_starts_its_own(traced, receiver):
    reply = traced.charge()
    (line,) = [line for line in charge_log_lines(traced) if line["attempt_id"] == reply.json()["id"]]
    assert len(line["trace_id"]) == 32 and line["trace_id"] != TRACE_ID


def test_untraced_server_logs_no_trace_id(tmp_path):
    # The default: no OTEL_* variable, no tracing, no trace id in the log.
    srv = Server(tmp_path).start()
    try:
        srv.charge()
    finally:
        srv.stop()
    (line,) = charge_log_lines(srv)
    assert "trace_id" not in line
