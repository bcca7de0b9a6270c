"""One spelling of every shared code: the pure modules read it, the models' choices match it."""

from __future__ import annotations

import ast
import itertools
import sys
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

import pytest

from twosv import models, vocabulary
from twosv.engine import RULES, Answers, Facts, LookupFacts, MethodFacts, advisories, decide
from twosv.vocabulary import (
    AdvisoryCode,
    LookupStatus,
    MethodKind,
    MethodRole,
    RuleCode,
    StepCode,
    Verdict,
)

ROOT = Path(__file__).resolve().parent.parent
ENGINE_FILES = sorted((ROOT / "twosv" / "engine").glob("*.py"))
PURE_FILES = [ROOT / "twosv" / "policy.py", ROOT / "twosv" / "vocabulary.py", *ENGINE_FILES]


def _imported_modules(path: Path) -> list[str]:
    """Return every module `path` imports, wherever the import statement sits."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.append(node.module or "")
    return found


def _allowed(module: str, path: Path) -> bool:
    if module.split(".")[0] in sys.stdlib_module_names:
        return True
    if path.name == "vocabulary.py":
        return False
    if module == "twosv.vocabulary":
        return True
    # The engine's modules read one another.
    return path in ENGINE_FILES and (module == "twosv.engine" or module.startswith("twosv.engine."))


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda path: path.name)
def test_pure_modules_import_only_the_standard_library_and_the_vocabulary(path: Path) -> None:
    imported = _imported_modules(path)
    assert imported
    assert [module for module in imported if not _allowed(module, path)] == []


CHOICES = [
    (models.MethodKind, vocabulary.MethodKind),
    (models.MethodRole, vocabulary.MethodRole),
    (models.EventType, vocabulary.EventType),
    (models.EventOutcome, vocabulary.EventOutcome),
    (models.LookupStatus, vocabulary.LookupStatus),
    (models.Verdict, vocabulary.Verdict),
    (models.SessionOutcome, vocabulary.SessionOutcome),
]


@pytest.mark.parametrize(("choices", "enum"), CHOICES, ids=lambda c: c.__name__)
def test_model_choices_are_the_vocabulary(choices: type[Enum], enum: type[Enum]) -> None:
    assert [(member.name, member.value) for member in choices] == [
        (member.name, member.value) for member in enum
    ]


def test_ats_record_status_choices_are_the_vocabulary() -> None:
    field = models.LocalDeliveryRecord._meta.get_field("status")
    assert [value for value, _ in field.choices] == list(vocabulary.AtsStatus)


def test_kind_sets_are_the_vocabulary() -> None:
    assert models.CODE_RECEIVING_KINDS is vocabulary.CODE_RECEIVING_KINDS
    assert models.PHONE_KINDS is vocabulary.PHONE_KINDS
    assert vocabulary.PHONE_KINDS < vocabulary.CODE_RECEIVING_KINDS
    lookup_statuses = vocabulary.IN_FLIGHT_LOOKUP_STATUSES | vocabulary.FINISHED_LOOKUP_STATUSES
    assert lookup_statuses == set(LookupStatus)


def _step_codes_written_in_the_engine() -> list[ast.expr]:
    """Return every expression the engine passes as `code=` or inside `alternatives=`."""
    found: list[ast.expr] = []
    for path in ENGINE_FILES:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            for keyword in node.keywords:
                if keyword.arg == "code":
                    found.append(keyword.value)
                elif keyword.arg == "alternatives":
                    for part in ast.walk(keyword.value):
                        if isinstance(part, ast.Tuple):
                            found.extend(part.elts)
    return found


def test_every_code_the_engine_writes_is_a_vocabulary_member() -> None:
    written = _step_codes_written_in_the_engine()
    assert len(written) > len(StepCode)
    for expression in written:
        assert isinstance(expression, ast.Attribute), ast.unparse(expression)
        assert isinstance(expression.value, ast.Name), ast.unparse(expression)
        enum = {"StepCode": StepCode, "AdvisoryCode": AdvisoryCode}[expression.value.id]
        assert expression.attr in enum.__members__, ast.unparse(expression)


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _method(method_id: str, kind: MethodKind, role: MethodRole, *, locked: bool) -> MethodFacts:
    return MethodFacts(
        method_id=method_id,
        kind=kind,
        role=role,
        active=True,
        locked=locked,
        seconds_remaining=3600 if locked else None,
        locked_until=NOW + timedelta(hours=1) if locked else None,
        resend_count=195,
        has_phone=kind in vocabulary.PHONE_KINDS,
        phone_region="IN" if kind in vocabulary.PHONE_KINDS else None,
        visible_in_crm=role == MethodRole.PRIMARY,
        enrolled_at=NOW - timedelta(days=1),
        phone_changed_at=NOW - timedelta(hours=1) if kind in vocabulary.PHONE_KINDS else None,
    )


def _every_situation() -> list[Facts]:
    answers = [Answers(a, b, c) for a, b, c in itertools.product((None, True, False), repeat=3)]
    # A miss, two misses in a row, a changed number (R6 and R6a).
    answers += [
        Answers(True, None, False, phone_check_misses=1),
        Answers(True, None, False, phone_number_changed=False, phone_check_misses=1),
        Answers(True, None, False, phone_check_misses=2),
        Answers(True, None, None, phone_number_changed=True),
    ]
    lookups: list[LookupFacts | None] = [None]
    for status, verdict in itertools.product(LookupStatus, [None, *Verdict]):
        lookups.append(LookupFacts("lk", "p", status, verdict, NOW - timedelta(minutes=1), NOW))
    method_sets: list[tuple[MethodFacts, ...]] = [()]
    backups = (None, False, True)  # none, a usable backup, a locked one
    for kind, locked, backup_locked in itertools.product(MethodKind, (False, True), backups):
        primary = _method("p", kind, MethodRole.PRIMARY, locked=locked)
        if backup_locked is None:
            method_sets.append((primary,))
        else:
            backup = _method("b", MethodKind.SMS, MethodRole.BACKUP, locked=backup_locked)
            method_sets.append((primary, backup))
    return [
        Facts(
            now=NOW,
            customer_id="c",
            methods=methods,
            answers=answer,
            latest_lookup=lookup,
            regional_advisories={"IN": "Trouble in India."},
        )
        for methods, answer, lookup in itertools.product(method_sets, answers, lookups)
    ]


def test_every_step_the_engine_returns_speaks_the_vocabulary() -> None:
    codes: set[StepCode] = set()
    rules: set[RuleCode] = set()
    for facts in _every_situation():
        step = decide(facts).step
        assert type(step.code) is StepCode
        assert type(step.rule) is RuleCode
        assert all(type(code) is StepCode for code in step.alternatives)
        assert all(type(advisory.code) is AdvisoryCode for advisory in advisories(facts))
        codes.add(step.code)
        rules.add(step.rule)
    assert codes == set(StepCode)
    assert rules == set(RuleCode) == {rule.rule for rule in RULES}
