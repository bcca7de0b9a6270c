"""The OpenAPI schema tells the whole truth: every error an operation can answer, no extra fields.

`ApiAutoSchema` documents the error answers every operation shares (401/403 for protected
views, 404 where the path names an object, 400/413/415 where a body is read, 429 where a
throttle applies) in the one error shape; views declare their own (409, a per-session 429) with
`error_response`. `close_response_objects` marks every response object
``additionalProperties: false``: the serializers name their fields, and a response that gains
one the schema doesn't list is a bug (tests/test_response_allowlist.py and schemathesis check).
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework.permissions import AllowAny

from crm_plugin.api.errors import ErrorOutput

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_DESCRIPTIONS = {
    "400": "The input is invalid; `error.field` names the culprit where there is one.",
    "401": "No credentials, or wrong ones (`Authorization: Token <key>` or a session).",
    "403": "The caller's role may not do this.",
    "404": "No such object, or not one the caller may see.",
    "409": "The request contradicts the current state.",
    "413": "The request body is too large.",
    "415": "The body must be JSON (`Content-Type: application/json`).",
    "429": "Too many requests; `Retry-After` says when to try again.",
}

_HEADERS = {
    "401": {
        "WWW-Authenticate": {
            "schema": {"type": "string"},
            "required": True,
            "description": "The authentication scheme to use: `Token`.",
        }
    },
    "429": {
        "Retry-After": {
            "schema": {"type": "string"},
            "description": "Seconds to wait (throttling); absent when waiting won't help.",
        }
    },
}


def error_response(description: str) -> OpenApiResponse:
    """Return an error answer for a view's `extend_schema(responses=...)`."""
    return OpenApiResponse(response=ErrorOutput, description=description)


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, documenting the error answers the API's views share."""

    def _error_statuses(self) -> list[str]:
        statuses = []
        view = self.view
        permissions = getattr(view, "permission_classes", [])
        if any(permission is not AllowAny for permission in permissions):
            statuses += ["401", "403"]
        if "{" in self.path:
            statuses.append("404")
        if self.method in _BODY_METHODS:
            statuses += ["400", "413", "415"]
        if getattr(view, "throttle_scope", None):
            statuses.append("429")
        return statuses

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._error_statuses():
            if code not in responses:
                response = OpenApiResponse(response=ErrorOutput, description=_DESCRIPTIONS[code])
                build = self._get_response_for_code  # untyped in drf-spectacular
                responses[code] = build(response, code, direction=direction)  # type: ignore[no-untyped-call]
        for code, headers in _HEADERS.items():
            if code in responses:
                responses[code].setdefault("headers", {}).update(headers)
        return dict(sorted(responses.items()))


def close_response_objects(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Mark every response component an object without extra properties (a postprocessing hook).

    Request components (``...Request`` with COMPONENT_SPLIT_REQUEST) are left as they are: what
    a request may carry is up to each view's serializer.
    """
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            continue
        _close(schema)
    return result


def _close(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object" and "properties" in schema:
        schema.setdefault("additionalProperties", False)
    for value in schema.get("properties", {}).values():
        _close(value)
    for key in ("items", "allOf", "oneOf", "anyOf"):
        value = schema.get(key)
        for item in value if isinstance(value, list) else [value]:
            _close(item)
