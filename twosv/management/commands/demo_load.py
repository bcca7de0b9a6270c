"""Load the demo data of `make run`: one customer per situation of the article, timers live.

The data lives in ``fixtures/demo.json`` with times relative to now ("-2h", "-30min"), so
every run replays it as if it had just happened: locks have hours left, lookups are fresh.
Events go through ``twosv.services.event_ingest``, the service behind ``POST /api/v1/events/``,
so the lock projection is whatever the real fold makes of them. A re-run first wipes the
previous demo data (customers whose id starts with ``demo-``, with their events, methods,
lookups and sessions, and the demo ATS records) and loads it afresh.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from twosv.errors import DomainError
from twosv.models import (
    Customer,
    DeliveryLookup,
    Event,
    LocalDeliveryRecord,
    LookupStatus,
    Method,
)
from twosv.selectors import subject_method
from twosv.services import event_ingest
from twosv.services.receipts import receipt_record
from twosv.vocabulary import FINAL_ATS_STATUSES, AtsStatus, EventType

DEMO_PREFIX = "demo-"
AGENT_USERNAME = "demo-agent"
PRODUCER_USERNAME = "demo-producer"
ADMIN_USERNAME = "admin"
# A well-known login is what a local demo wants; it is only ever created with DEBUG on.
ADMIN_PASSWORD = "admin"  # noqa: S105
ATS_STATUSES = frozenset(AtsStatus)
DEFAULT_SENDER = "+14803605516"
# How long after sending the ATS records its delivery receipt.
RECEIPT_DELAY = timedelta(seconds=4)
# A seeded lookup "at": "stale" is this much older than TWOSV_LOOKUP_STALE_AFTER: the sweeper's
# first run (the dev server runs it as it starts) publishes it again and it completes.
STALE_MARGIN = timedelta(seconds=10)
STALE = "stale"
# In a walkthrough's "do", the number on file of the method the panel checks.
NUMBER_PLACEHOLDER = "{number}"

_OFFSET = re.compile(r"^-((?:\d+(?:d|h|min|s))+)$")
_OFFSET_PART = re.compile(r"(\d+)(d|h|min|s)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "min": 60, "s": 1}


def parse_offset(value: object) -> timedelta:
    """Return the offset from now that ``value`` ("now", "-30s", "-7h5min", "-90d") names."""
    if value == "now":
        return timedelta(0)
    match = _OFFSET.match(value) if isinstance(value, str) else None
    if match is None:
        raise CommandError(
            f"{value!r} is not a time relative to now (examples: now, -30s, -40min, -7h5min, -90d)."
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _OFFSET_PART.findall(match[1]))
    return -timedelta(seconds=seconds)


@dataclass(frozen=True)
class PlannedEvent:
    occurred_at: datetime
    type: str
    method_id: str
    data: dict[str, Any]


@dataclass
class LoadCounts:
    customers: int = 0
    events: int = 0
    ats_records: int = 0
    lookups: int = 0

    def add(self, other: LoadCounts) -> None:
        self.customers += other.customers
        self.events += other.events
        self.ats_records += other.ats_records
        self.lookups += other.lookups


@dataclass(frozen=True)
class DemoUsers:
    agent: User
    agent_token: str
    producer: User
    producer_token: str
    admin_note: str


@dataclass(frozen=True)
class DemoCustomer:
    customer_id: str
    situation: str
    walkthrough: list[tuple[str, str]] = field(default_factory=list)
    # The number to type in the phone check (the subject method's), as a caller would say it.
    phone_check: str = ""


def read_fixture(path: Path) -> list[dict[str, Any]]:
    """Return the customers of the fixture file, refusing one the wipe could not find again."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(f"Can't read the demo fixture {path}: {exc}") from exc
    customers = raw.get("customers") if isinstance(raw, dict) else None
    if not isinstance(customers, list) or not customers:
        raise CommandError(f"{path}: expected an object with a non-empty list `customers`.")
    seen: set[str] = set()
    for customer in customers:
        customer_id = customer.get("customer_id") if isinstance(customer, dict) else None
        # A re-run finds the previous demo data by this prefix: anything else would pile up.
        if not isinstance(customer_id, str) or not customer_id.startswith(DEMO_PREFIX):
            raise CommandError(f"{path}: every customer_id must start with {DEMO_PREFIX!r}.")
        if customer_id in seen:
            raise CommandError(f"{path}: customer {customer_id} appears twice.")
        seen.add(customer_id)
    return customers


def plan_events(raw_events: list[dict[str, Any]], now: datetime) -> list[PlannedEvent]:
    """Expand the fixture's events (single ones and evenly spread runs) in time order."""
    planned: list[PlannedEvent] = []
    for raw in raw_events:
        method_id = raw["method"]
        data = {"method_id": method_id, **raw.get("data", {})}
        if "count" in raw:
            count = int(raw["count"])
            start, end = now + parse_offset(raw["from"]), now + parse_offset(raw["to"])
            if count < 1 or end < start:
                raise CommandError(f"Bad run of {raw['type']} events for {method_id}.")
            step = (end - start) / (count - 1) if count > 1 else timedelta(0)
            times = [start + step * i for i in range(count)]
        else:
            times = [now + parse_offset(raw["at"])]
        planned.extend(PlannedEvent(t, raw["type"], method_id, data) for t in times)
    # Stable: events at the same time keep the fixture's order, and their ids follow it.
    planned.sort(key=lambda event: event.occurred_at)
    return planned


def demo_wipe() -> int:
    """Delete the previous demo data; return how many demo customers were removed."""
    customers = Customer.objects.filter(customer_id__startswith=DEMO_PREFIX)
    # Events protect their customer and method: they go first. Methods, lookups (with their
    # attempts) and sessions follow their customer. Audit entries stay: they are append-only.
    Event.objects.filter(customer__in=customers).delete()
    removed = customers.count()
    customers.delete()
    LocalDeliveryRecord.objects.filter(external_id__startswith=DEMO_PREFIX).delete()
    return removed


def _ingest(customer_id: str, planned: list[PlannedEvent]) -> None:
    width = max(3, len(str(len(planned))))
    for n, event in enumerate(planned, start=1):
        event_id = f"{customer_id}-{n:0{width}d}"
        try:
            result = event_ingest(
                event_id=event_id,
                event_type=event.type,
                customer_id=customer_id,
                occurred_at=event.occurred_at,
                data=event.data,
            )
        except DomainError as exc:
            raise CommandError(f"{event_id} ({event.type}): {exc.message} [{exc.field}]") from exc
        if result.status != "accepted":
            raise CommandError(f"{event_id} was already stored: the wipe missed it.")


def _ats_records(customer_id: str, raw_records: list[dict[str, Any]], now: datetime) -> int:
    records = []
    for n, raw in enumerate(raw_records, start=1):
        if raw.get("status") not in ATS_STATUSES or not raw.get("to"):
            raise CommandError(f"{customer_id}: ATS record {n} needs `to` and a valid `status`.")
        created_at = now + parse_offset(raw["at"])
        final = raw["status"] in FINAL_ATS_STATUSES
        records.append(
            LocalDeliveryRecord(
                external_id=f"{customer_id}-ats-{n:02d}",
                to=raw["to"],
                sender=raw.get("sender", DEFAULT_SENDER),
                provider=raw.get("provider", "twilio"),
                status=raw["status"],
                error_code=raw.get("error_code"),
                created_at=created_at,
                updated_at=created_at + RECEIPT_DELAY if final else created_at,
            )
        )
    LocalDeliveryRecord.objects.bulk_create(records)
    _receipts(records)
    return len(records)


def _receipts(records: list[LocalDeliveryRecord]) -> None:
    """Give each ATS record Twilio's status callbacks too (`sent`, then its final status), as
    the webhook stores them: the method's timeline shows them, error codes in words."""
    for record in records:
        sid = "SM" + hashlib.sha256(record.external_id.encode()).hexdigest()[:32]
        statuses = [AtsStatus.SENT] if record.status != AtsStatus.QUEUED else []
        if record.status in FINAL_ATS_STATUSES:
            statuses.append(AtsStatus(record.status))
        for n, status in enumerate(statuses):
            receipt_record(
                message_sid=sid,
                status=status,
                error_code=record.error_code if status in FINAL_ATS_STATUSES else None,
                to=record.to,
                sender=record.sender,
                now=record.created_at + (RECEIPT_DELAY if n else timedelta(seconds=1)),
            )


def _lookups(
    customer: Customer, raw_lookups: list[dict[str, Any]], now: datetime, agent: User
) -> int:
    """Seed lookups caught mid-flight or failed: the local ATS backend never does either."""
    for raw in raw_lookups:
        status = raw.get("status")
        if status not in {LookupStatus.PENDING, LookupStatus.RUNNING, LookupStatus.FAILED}:
            raise CommandError(
                f"{customer.customer_id}: a seeded lookup is pending, running or failed."
            )
        method = Method.objects.get(customer=customer, method_id=raw["method"])
        stale = raw["at"] == STALE
        if stale:
            # Published, then its message lost: due for the sweeper's very next run.
            created_at = now - settings.TWOSV_LOOKUP_STALE_AFTER - STALE_MARGIN
        else:
            created_at = now + parse_offset(raw["at"])
        lookup = DeliveryLookup.objects.create(
            customer=customer,
            method=method,
            requested_by=agent,
            status=status,
            period_start=created_at - settings.TWOSV_LOOKUP_PERIOD,
        )
        finished = status == LookupStatus.FAILED
        # created_at is auto_now_add: set the demo's time with an update.
        DeliveryLookup.objects.filter(pk=lookup.pk).update(
            created_at=created_at,
            enqueued_at=created_at if stale or status != LookupStatus.PENDING else None,
            started_at=created_at if status != LookupStatus.PENDING else None,
            finished_at=created_at + timedelta(seconds=30) if finished else None,
            tries=settings.TWOSV_LOOKUP_MAX_TRIES if finished else 0,
            failure_reason=raw.get("failure_reason", "") if finished else "",
        )
    return len(raw_lookups)


def demo_customer_load(raw: dict[str, Any], *, now: datetime, agent: User) -> LoadCounts:
    """Load one demo customer in one transaction: events, ATS records, seeded lookups."""
    customer_id = raw["customer_id"]
    try:
        planned = plan_events(raw.get("events", []), now)
        with transaction.atomic():
            customer = Customer.objects.create(
                customer_id=customer_id, display_name=raw.get("display_name", "")
            )
            _ingest(customer_id, planned)
            ats = _ats_records(customer_id, raw.get("ats", []), now)
            lookups = _lookups(customer, raw.get("lookups", []), now, agent)
    except (KeyError, TypeError, ValueError) as exc:
        raise CommandError(f"{customer_id}: malformed demo data ({exc!r}).") from exc
    return LoadCounts(customers=1, events=len(planned), ats_records=ats, lookups=lookups)


def demo_phone_check(customer_id: str, *, now: datetime) -> str:
    """Return the number to type in the customer's phone check ("+1 202-555-0143"), or "".

    The number on file of the subject method (P), the one the panel's phone check compares.
    """
    customer = Customer.objects.get(customer_id=customer_id)
    method = subject_method(customer=customer, chosen=None, now=now)
    if method is None or not method.phone_number:
        return ""
    parsed = phonenumbers.parse(method.phone_number, None)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _user_with_token(username: str, group_name: str, first_name: str) -> tuple[User, str]:
    group = Group.objects.filter(name=group_name).first()
    if group is None:
        raise CommandError(f"The group {group_name!r} is missing: run `manage.py migrate` first.")
    user, created = User.objects.get_or_create(
        username=username, defaults={"first_name": first_name}
    )
    if created:
        # Token only: nobody logs in to the admin as a demo agent or producer.
        user.set_unusable_password()
        user.save(update_fields=["password"])
    user.groups.add(group)
    # Kept across runs, so a token pasted into a CRM or a shell keeps working.
    token, _ = Token.objects.get_or_create(user=user)
    return user, token.key


def _debug_admin() -> str:
    if not settings.DEBUG:
        return "not created (DEBUG is off; use `manage.py createsuperuser`)"
    user, created = User.objects.get_or_create(
        username=ADMIN_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_password(ADMIN_PASSWORD)
        user.save(update_fields=["password"])
        return f'superuser created, password "{ADMIN_PASSWORD}" (DEBUG only)'
    # No check_password to say which: one hash costs about half a second.
    return f'already exists, password left as it was ("{ADMIN_PASSWORD}" when demo_load made it)'


@transaction.atomic
def demo_users() -> DemoUsers:
    """Create (or keep) the demo agent and producer with their tokens, and a DEBUG admin."""
    agent, agent_token = _user_with_token(AGENT_USERNAME, "support_agent", "Demo agent")
    producer, producer_token = _user_with_token(
        PRODUCER_USERNAME, "event_producer", "Demo producer"
    )
    return DemoUsers(agent, agent_token, producer, producer_token, _debug_admin())


class Command(BaseCommand):
    help = (
        "Load the demo customers of fixtures/demo.json with times relative to now (wiping the "
        "previous demo data), create the demo agent, producer and (DEBUG only) admin users, "
        "and print the agent's token with curl lines to try."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--fixture",
            type=Path,
            default=None,
            help="The demo data file (default: fixtures/demo.json).",
        )
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the server answers, for the printed curl lines.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fixture = options["fixture"] or Path(settings.BASE_DIR) / "fixtures" / "demo.json"
        raw_customers = read_fixture(fixture)
        started = time.perf_counter()
        now = timezone.now()

        with transaction.atomic():
            wiped = demo_wipe()
        users = demo_users()
        counts = LoadCounts()
        for raw in raw_customers:
            counts.add(demo_customer_load(raw, now=now, agent=users.agent))
        elapsed = time.perf_counter() - started

        customers = [
            DemoCustomer(
                customer_id=raw["customer_id"],
                situation=raw.get("situation", ""),
                walkthrough=[(s["do"], s["step"]) for s in raw.get("walkthrough", [])],
                phone_check=demo_phone_check(raw["customer_id"], now=now),
            )
            for raw in raw_customers
        ]
        self._report(
            counts=counts,
            wiped=wiped,
            elapsed=elapsed,
            now=now,
            users=users,
            customers=customers,
            base_url=options["base_url"].rstrip("/"),
        )

    def _report(
        self,
        *,
        counts: LoadCounts,
        wiped: int,
        elapsed: float,
        now: datetime,
        users: DemoUsers,
        customers: list[DemoCustomer],
        base_url: str,
    ) -> None:
        api = f"{base_url}/api/v1"
        auth = f'-H "Authorization: Token {users.agent_token}"'
        json_auth = f'{auth} -H "Content-Type: application/json"'
        produce = (
            f'-H "Authorization: Token {users.producer_token}" -H "Content-Type: application/json"'
        )
        event = json.dumps(
            {
                "event_id": "demo-approaching-try-1",
                "type": EventType.CODE_RESEND_REQUESTED,
                "customer_id": "demo-approaching",
                "occurred_at": now.isoformat(timespec="seconds"),
                "data": {"method_id": "demo-approaching-sms"},
            }
        )
        answers = json.dumps({"answers": {"has_device_access": True}})
        # demo-india's number in its national format, as a customer would say it.
        phone = json.dumps({"phone_number": "098765 43210"})
        replaced = f", replacing {wiped} from the previous run" if wiped else ""
        lines = [
            self.style.SUCCESS(
                f"Demo data loaded in {elapsed:.2f} s: {counts.customers} customers{replaced}, "
                f"{counts.events} events, {counts.ats_records} ATS delivery records, "
                f"{counts.lookups} seeded lookups; times relative to "
                f"{now.isoformat(timespec='seconds')}."
            ),
            "",
            "Users:",
            f"  {AGENT_USERNAME:<14} support_agent   token {users.agent_token}",
            f"  {PRODUCER_USERNAME:<14} event_producer  token {users.producer_token}",
            f"  {ADMIN_USERNAME:<14} {users.admin_note}: {base_url}/admin/",
            "",
            f"Try it with the agent's token (API docs: {api}/docs/):",
            f"  curl {auth} {api}/customers/demo-locked/twosv/",
            f"  curl -X POST {json_auth} -d '{{}}' {api}/customers/demo-india/twosv/sessions/",
            f"  curl -X PATCH {json_auth} -d '{answers}' {api}/twosv/sessions/<session id>/",
            f"  curl -X POST {json_auth} -d '{phone}' "
            f"{api}/twosv/sessions/<session id>/verify-phone/",
            f"  curl -X POST {json_auth} -d '{{}}' "
            f"{api}/customers/demo-india/twosv/delivery-lookups/",
            "Post an event with the producer's token:",
            f"  curl -X POST {produce} -d '{event}' {api}/events/",
            "",
            "Demo customers (what the panel shows, then the steps as the agent answers):",
        ]
        width = max(len(c.customer_id) for c in customers)
        for customer in customers:
            lines.append(f"  {customer.customer_id:<{width}}  {customer.situation}")
            number = customer.phone_check or "(no number on file)"
            walk = "; ".join(
                f"{do.replace(NUMBER_PLACEHOLDER, number)} -> {step}"
                for do, step in customer.walkthrough
            )
            if walk:
                lines.append(f"  {'':<{width}}    {walk}")
            if customer.phone_check:
                lines.append(
                    f"  {'':<{width}}    phone check: type {customer.phone_check} for a match"
                )
        if not settings.DEBUG:
            lines += [
                "",
                self.style.WARNING(
                    "DEBUG is off: if this database is not a demo, delete the users "
                    f"{AGENT_USERNAME} and {PRODUCER_USERNAME}: their tokens work."
                ),
            ]
        self.stdout.write("\n".join(lines))
