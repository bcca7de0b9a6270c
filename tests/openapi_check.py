"""Check API responses against the OpenAPI schema, leaving no room for undocumented fields.

The schema is the one /api/v1/schema/ serves (drf-spectacular), read once per test session.
Every response object is validated as closed (``additionalProperties: false``) whether or not
the published schema says so: a field that isn't documented is a field that leaks.
"""

import functools
import json
import re
from typing import Any

import jsonschema

API_PREFIX = "/api/v1/"
# The schema and its UI describe the API; they are not part of it.
UNDESCRIBED_PREFIXES = ("/api/v1/schema/", "/api/v1/docs/")


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """Return the OpenAPI document as plain JSON data, exactly as the schema endpoint renders it."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema, renderer_context={}))


def _to_json_schema(node: Any) -> Any:
    """Return an OpenAPI 3.0 schema as JSON Schema: `nullable` as a null branch, objects closed."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if "properties" in converted and converted.get("type", "object") == "object":
        converted.setdefault("additionalProperties", False)
    if node.get("nullable"):
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def _components() -> dict[str, Any]:
    return _to_json_schema(openapi_schema().get("components", {}))


@functools.cache
def _operations() -> tuple[tuple[re.Pattern[str], str, str], ...]:
    """Return (path regex, method, path template) for every operation of the schema."""
    found = []
    for template, item in openapi_schema()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append((pattern, method, template))
    return tuple(found)


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """Return (path template, operation) for a request, or None when the schema has no such."""
    for pattern, op_method, template in _operations():
        if op_method == method.lower() and pattern.match(path):
            return template, openapi_schema()["paths"][template][op_method]
    return None


def response_problems(
    method: str, path: str, status: int, content_type: str, body: bytes
) -> list[str]:
    """Return what is wrong with one response against the schema (nothing: an empty list)."""
    found = find_operation(method, path)
    if found is None or status >= 500:
        # A route the schema doesn't describe (405 for a method, 404 for a path), or the server
        # failing: a 5xx is a bug of its own, which the test that provokes it asserts.
        return []
    template, operation = found
    where = f"{method.upper()} {template} -> {status}"
    documented = operation["responses"].get(str(status))
    if documented is None:
        return [f"{where}: status not documented (has {sorted(operation['responses'])})"]
    content = documented.get("content")
    if not content:
        return [] if not body else [f"{where}: body where the schema documents none"]
    if not content_type.startswith("application/json"):
        return [f"{where}: content type {content_type!r}, documented {sorted(content)}"]
    response_schema = content.get("application/json", {}).get("schema", {})
    validator = jsonschema.Draft202012Validator(
        {"allOf": [_to_json_schema(response_schema)], "components": _components()}
    )
    try:
        data = json.loads(body)
    except ValueError:
        return [f"{where}: not JSON"]
    return [_describe(where, error) for error in validator.iter_errors(data)]


def _describe(where: str, error: jsonschema.ValidationError) -> str:
    # A nullable object is an anyOf [object, null]: name what is wrong inside the object.
    while error.context:
        inside = [e for e in error.context if (e.validator, e.validator_value) != ("type", "null")]
        best = jsonschema.exceptions.best_match(inside or error.context)
        if best is None:
            break
        error = best
    return f"{where}: {'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
