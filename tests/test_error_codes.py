"""One error system: every code the API can answer with is an ErrorCode, and is documented."""

import ast
from pathlib import Path

import pytest
from rest_framework import exceptions

from crm_plugin.api import errors as api_errors
from tests.openapi_check import openapi_schema
from twosv import errors
from twosv.errors import ErrorCode

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_ERRORS = {"DomainError", "InvalidInput", "NotFound", "Forbidden", "Conflict", "TooManyTries"}


def _sources(*folders: str) -> list[Path]:
    return sorted(
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*.py")
        if "migrations" not in path.parts
    )


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _code_keyword(call: ast.Call) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == "code"), None)


def test_the_api_uses_the_domain_enum() -> None:
    assert api_errors.ErrorCode is ErrorCode


def test_every_domain_error_is_raised_with_a_member_of_the_enum() -> None:
    found = 0
    for path in _sources("twosv", "crm_plugin"):
        for call in _calls(path):
            if _name(call) not in DOMAIN_ERRORS:
                continue
            code = _code_keyword(call)
            if code is None:
                continue
            found += 1
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            assert isinstance(code, ast.Attribute), f"{where}: write code=ErrorCode.X"
            assert isinstance(code.value, ast.Name), where
            assert code.value.id == "ErrorCode", f"{where}: write code=ErrorCode.X"
            assert code.attr in ErrorCode.__members__, f"{where}: ErrorCode has no {code.attr}"
    assert found > 10


@pytest.mark.parametrize(
    "cls", [errors.DomainError, *errors.DomainError.__subclasses__()], ids=lambda c: c.__name__
)
def test_every_domain_error_defaults_to_a_member_of_the_enum(cls: type) -> None:
    assert isinstance(cls.code, ErrorCode)


def test_the_api_layers_own_codes_are_members_of_the_enum() -> None:
    """The codes the HTTP layer gives its validation errors, and DRF's own exceptions."""
    literal_codes = {
        code.value
        for path in _sources("crm_plugin/api")
        for call in _calls(path)
        if isinstance(code := _code_keyword(call), ast.Constant) and isinstance(code.value, str)
    }
    drf_codes = {
        cls.default_code
        for cls in (
            exceptions.ParseError,
            exceptions.AuthenticationFailed,
            exceptions.NotAuthenticated,
            exceptions.PermissionDenied,
            exceptions.NotFound,
            exceptions.MethodNotAllowed,
            exceptions.NotAcceptable,
            exceptions.UnsupportedMediaType,
            exceptions.Throttled,
            exceptions.ValidationError,
            api_errors.RequestTooLarge,
        )
    }
    assert literal_codes
    assert (literal_codes | drf_codes) - set(ErrorCode) == set()


def test_the_openapi_schema_lists_every_code() -> None:
    schemas = openapi_schema()["components"]["schemas"]
    code = schemas["ErrorDetailOutput"]["properties"]["code"]
    ref = code["allOf"][0]["$ref"] if "allOf" in code else code.get("$ref")
    enum = schemas[ref.rsplit("/", 1)[-1]]["enum"] if ref else code["enum"]
    assert enum == [member.value for member in ErrorCode]
