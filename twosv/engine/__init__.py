"""The next-step engine: docs/SPEC.md section 4 as a table read top to bottom.

Pure: the standard library and twosv.vocabulary only. The caller gathers the facts (methods
with their lock state and resend counts, the latest delivery lookup for the method in
question, the agent's answers) and `decide` returns the first matching rule's step plus the
advisories shown beside it.

Start with `rules` (the table and `decide`); `facts` holds the dataclasses, `predicates` when
each rule applies, `steps_access` and `steps_delivery` what each step says, `wording` the
shared phrases and `advisories` the hints shown beside any step.
"""

from twosv.engine.advisories import advisories
from twosv.engine.facts import (
    KNOWN_VERDICTS,
    Action,
    Advisory,
    Answers,
    Decision,
    Facts,
    LookupFacts,
    MethodFacts,
    Question,
    Step,
    subject_method,
)
from twosv.engine.rules import RULES, Rule, decide
from twosv.engine.wording import (
    SECTION_BACKUP,
    SECTION_GENERAL,
    SECTION_INDIA,
    SECTION_LOCKED,
    SECTION_NO_DEVICE,
    SECTION_NOT_RECEIVING,
)
from twosv.vocabulary import (
    CODE_RECEIVING_KINDS,
    FINISHED_LOOKUP_STATUSES,
    PHONE_KINDS,
)

__all__ = [
    "CODE_RECEIVING_KINDS",
    "FINISHED_LOOKUP_STATUSES",
    "KNOWN_VERDICTS",
    "PHONE_KINDS",
    "RULES",
    "SECTION_BACKUP",
    "SECTION_GENERAL",
    "SECTION_INDIA",
    "SECTION_LOCKED",
    "SECTION_NOT_RECEIVING",
    "SECTION_NO_DEVICE",
    "Action",
    "Advisory",
    "Answers",
    "Decision",
    "Facts",
    "LookupFacts",
    "MethodFacts",
    "Question",
    "Rule",
    "Step",
    "advisories",
    "decide",
    "subject_method",
]
