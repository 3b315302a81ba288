"""A JSON parser that keeps money exact and refuses what a payment API should not guess at."""

import codecs
import contextlib
import heapq
import itertools
import json
import logging
import os
import socket
import threading
import time
from decimal import Decimal

from django.conf import settings
from django.utils.http import parse_header_parameters
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from payment_app.errors import LengthRequired, PayloadTooLarge, RequestTimeout

logger = logging.getLogger(__name__)


class ExponentDecimal(Decimal):
    """A JSON number written in exponent notation (1e2): exact, but refused as an amount."""


def _parse_float(token: str) -> Decimal:
    """JSON numbers with a fraction or exponent become exact Decimals, never floats."""
    return ExponentDecimal(token) if "e" in token.lower() else Decimal(token)


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not a JSON number")


class DuplicateMember(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose member names are unique (RFC 8259 says they SHOULD be).

    Parsers disagree on which of two values wins, so a proxy or a log that keeps the first
    would see another charge than the one made: refuse instead of picking one.
    """
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        name = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise DuplicateMember(name)
    return obj


def _declared_charset(media_type: str | None) -> str | None:
    """The charset parameter of the Content-Type, if any, as given."""
    if not media_type:
        return None
    _, params = parse_header_parameters(media_type)
    return params.get("charset")


def _is_utf8(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


def refuse_chunked(request) -> None:
    """A body without a Content-Length (Transfer-Encoding: chunked) is refused with 411.

    Django reads a request body only as far as its Content-Length, so a chunked body
    would look empty and earn a misleading "field is required". Antaeus always sends a
    Content-Length.
    """
    if request.META.get("HTTP_TRANSFER_ENCODING") and not request.META.get("CONTENT_LENGTH"):
        raise LengthRequired()


class _ReadDeadlines:
    """Ends body reads that outlive their deadline, one watchdog thread per process.

    gunicorn has no body-read timeout: a client that announces a Content-Length and
    then stalls, or trickles a byte now and then, holds a worker thread for as long as
    it likes. A socket timeout bounds each recv() but not their sum, so the watchdog
    shuts the socket down for reading at the deadline instead: the blocked read then
    returns what it has, the parser sees the deadline passed and answers 408, and the
    write side stays open for that answer.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, tuple[socket.socket, list[bool]]] = {}
        self._ids = itertools.count()
        self._pid = None

    @contextlib.contextmanager
    def watch(self, sock: socket.socket, seconds: float):
        """Yield a one-item list that is [True] if the deadline shut the socket."""
        expired = [False]
        token = next(self._ids)
        with self._cond:
            if self._pid != os.getpid():  # first use in this (forked) process
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="body-read-deadlines", daemon=True).start()
            self._live[token] = (sock, expired)
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            if self._heap[0][1] == token:  # the earliest deadline now: wake the watchdog
                self._cond.notify()
        try:
            yield expired
        finally:
            with self._cond:
                self._live.pop(token, None)

    def _run(self):
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._live):
                    _, token = heapq.heappop(self._heap)
                    entry = self._live.pop(token, None)
                    if entry is not None:
                        sock, expired = entry
                        expired[0] = True
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RD)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_deadlines = _ReadDeadlines()


def _read_body(stream, size: int, request) -> tuple[bytes, bool]:
    """Read up to `size` bytes within PAYMENT_BODY_READ_TIMEOUT_SECONDS; (bytes, timed out)."""
    sock = request.META.get("gunicorn.socket") if request is not None else None
    if not isinstance(sock, socket.socket):  # Django's test client, runserver
        return stream.read(size), False
    with _deadlines.watch(sock, settings.PAYMENT_BODY_READ_TIMEOUT_SECONDS) as expired:
        try:
            raw = stream.read(size)
        except OSError as exc:  # reset by the client: nobody is left to answer, but say why
            raise ParseError(f"The request body could not be read: {exc}", code="incomplete_body") from None
    return raw, expired[0]


class StrictJSONParser(BaseParser):
    """application/json only, bounded in size and read time, fractions parsed as Decimal.

    NaN and Infinity are refused (they are not JSON), as are objects naming a member
    twice, bodies in another charset than UTF-8, bodies nested too deeply for Python's
    parser and integers too long for its int conversion limit. A body
    that does not arrive within PAYMENT_BODY_READ_TIMEOUT_SECONDS is answered 408; one
    that ends before its Content-Length (the client half-closed) is answered 400.
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.PAYMENT_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        declared = int(declared) if declared and declared.isdigit() else None
        if declared is not None and declared > limit:
            raise PayloadTooLarge(limit)
        raw, timed_out = _read_body(stream, limit + 1, request)
        if timed_out and (declared is None or len(raw) < declared):
            logger.info("request body not received in time", extra={"received_bytes": len(raw)})
            raise RequestTimeout(settings.PAYMENT_BODY_READ_TIMEOUT_SECONDS)
        if len(raw) > limit:
            raise PayloadTooLarge(limit)
        if declared is not None and len(raw) < declared:
            raise ParseError(
                f"The request body ended after {len(raw)} of the {declared} bytes its "
                "Content-Length announced.",
                code="incomplete_body",
            )
        # JSON between systems is UTF-8 (RFC 8259, section 8.1); a body declared in another
        # charset is refused, not decoded, whatever it holds.
        charset = _declared_charset(media_type)
        if charset is not None and not _is_utf8(charset):
            raise ParseError(f"The request body must be UTF-8 JSON, not charset={charset[:32]}.")
        try:
            text = raw.decode("utf-8")
            return json.loads(
                text,
                parse_float=_parse_float,
                parse_constant=_refuse_constant,
                object_pairs_hook=_object_without_duplicates,
            )
        except UnicodeDecodeError:
            raise ParseError("The request body is not valid UTF-8 text.") from None
        except RecursionError:
            raise ParseError("The JSON body is nested too deeply.") from None
        except DuplicateMember as exc:
            raise ParseError(f"The JSON body names the member {str(exc)[:64]!r} more than once.") from None
        except ValueError as exc:
            raise ParseError(f"The request body is not valid JSON: {exc}") from None
