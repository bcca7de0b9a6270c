"""Request parsers shared by every API view."""

import json
from collections.abc import Mapping
from typing import IO, Any

from rest_framework import exceptions
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    """JSON as I-JSON (RFC 7493): 400, not 500, for what can't be stored or echoed back.

    Python's decoder overflows its stack on deeply nested arrays, and it turns a "\\ud800"
    escape into a lone surrogate that neither UTF-8 nor PostgreSQL can hold.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from exc
        try:
            json.dumps(parsed, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            raise exceptions.ParseError(
                "JSON parse error - a string holds a lone surrogate (not Unicode text)."
            ) from exc
        return parsed
