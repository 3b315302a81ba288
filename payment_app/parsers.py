"""A JSON parser that keeps money exact and refuses what a payment API should not guess at."""

import codecs
import json
from decimal import Decimal

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from payment_app.errors import PayloadTooLarge


class PlainDecimal(Decimal):
    """A JSON number written with a fraction and no exponent, parsed without float rounding."""


class ExponentDecimal(Decimal):
    """A JSON number written in exponent notation (1e2): exact, but refused as an amount."""


def _parse_float(token: str) -> Decimal:
    return ExponentDecimal(token) if token.lower().count("e") else PlainDecimal(token)


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not a JSON number")


class StrictJSONParser(BaseParser):
    """application/json only, bounded in size, numbers with fractions parsed as Decimal.

    NaN and Infinity are refused (they are not JSON), as are bodies nested too deeply
    for Python's parser and integers too long for its int conversion limit.
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.PAYMENT_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(limit)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(limit)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
            return json.loads(text, parse_float=_parse_float, parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            raise ParseError(f"The request body is not valid {encoding} text.") from None
        except RecursionError:
            raise ParseError("The JSON body is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"The request body is not valid JSON: {exc}") from None
