"""The CRM sidebar panel: server-rendered pages over the same selectors and services as the API.

Thin views: each parses a form, calls a selector or a service, and renders or redirects (POST,
then redirect, then GET). The agent is the panel's own identity (identity.py), entered by POSTing a
signed link and checked again on every request; every action counts against the API's throttle
for the same work (throttling.py). No GET writes anything but audit rows: a troubleshooting
session starts with the agent's first action (a POST), and the panel keeps one per customer for
the agent, its id in the Django session. Every response carries the panel's CSP, whose
``frame-ancestors`` lets the CRM (``CRM_PANEL_FRAME_ANCESTORS``) frame it, and no X-Frame-Options.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from crm_plugin.http import links
from crm_plugin.http.context import acting_user, audit_context
from crm_plugin.panel import display, forms, identity, throttling
from twosv import services
from twosv.audit import audit_refusal
from twosv.errors import DomainError, NotFound
from twosv.models import Customer, TroubleshootingSession
from twosv.selectors import TwosvState, access_customer, access_session, customer_twosv_state
from twosv.vocabulary import IN_FLIGHT_LOOKUP_STATUSES

View = Callable[..., HttpResponse]

SESSIONS_KEY = identity.REMEMBERED_SESSIONS_KEY
# An agent's Django session remembers this many customers' troubleshooting sessions at most.
REMEMBERED_CUSTOMERS = 50
ALTERNATIVE_LABELS = {
    "cancel_2sv_no_device_access": "Cancel 2SV (I don't have access to that device)",
    "use_backup_method": "Use the backup method: No code? in the login window",
}


# ---------------------------------------------------------------------------------------------
# Headers, access and throttles
# ---------------------------------------------------------------------------------------------

# The API's throttle scopes (crm_plugin/api) for the same work; None: the API has none either.
READ = "agent_read"  # the state, a session's answers, a lookup's status
LOOKUP = "lookup_request"
VERIFY_PHONE = "verify_phone"
SESSION_START = "session_start"


def panel_content_security_policy() -> str:
    """Return the panel's CSP: this site's own files only; framed by the CRM's origins only."""
    ancestors = " ".join(["'self'", *settings.CRM_PANEL_FRAME_ANCESTORS])
    return "; ".join(
        [
            "default-src 'self'",
            "base-uri 'none'",
            "object-src 'none'",
            "form-action 'self'",
            f"frame-ancestors {ancestors}",
        ]
    )


def panel_frame(view: View) -> View:
    """Send the panel's CSP instead of X-Frame-Options, and keep the page out of caches."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = panel_content_security_policy()
        return response

    # CSP frame-ancestors governs framing; X-Frame-Options DENY would forbid the CRM outright.
    return xframe_options_exempt(never_cache(wrapped))


def panel_agent_view(scope: str | None) -> Callable[[View], View]:
    """Let the panel's agent in, counted under the API's throttle `scope`.

    Nobody in the panel, or a panel session that ended: a 403 page (a refusal by someone known
    is audited). Over the rate: a 429 page with Retry-After. An unknown customer: a 404 page.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            access = identity.panel_agent(request)
            if access.agent is None:
                return _refused(request, view, access, kwargs.get("customer_id", ""))
            # The panel's agent acts in this request; Django's login (an admin's) stays as it is.
            request.user = access.agent
            try:
                throttling.throttle(request, scope)
                return _run(view, request, *args, **kwargs)
            except throttling.Throttled as exc:
                response = render(request, "panel/throttled.html", status=429)
                response["Retry-After"] = str(exc.retry_after)
                return response

        return panel_frame(wrapped)

    return decorator


def _refused(
    request: HttpRequest, view: View, access: identity.PanelAccess, customer_ref: str
) -> HttpResponse:
    user = access.former or request.user
    if user.is_authenticated:
        details = {"method": request.method, "view": f"panel.{view.__name__}"}
        if access.ended:
            details["code"] = access.ended
        audit_refusal(
            actor=user,
            customer_ref=str(customer_ref)[:64],
            details=details,
            context=audit_context(request),
        )
    return render(request, "panel/denied.html", {"ended": access.ended}, status=403)


def _run(view: View, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Run the view; a refused action says why on the page, an unknown customer is a 404."""
    try:
        return view(request, *args, **kwargs)
    except DomainError as exc:
        customer_id = kwargs.get("customer_id")
        if request.method == "POST" and customer_id and exc.code != "unknown_customer":
            # A refused action (closed session, tries used up, ...): say why on the page.
            messages.error(request, exc.message)
            return redirect(reverse("panel:customer", args=[customer_id]))
        if isinstance(exc, NotFound):
            return render(request, "panel/not_found.html", status=404)
        raise


# ---------------------------------------------------------------------------------------------
# Entry from the CRM
# ---------------------------------------------------------------------------------------------


@panel_frame
@require_http_methods(["GET", "POST"])
def panel_enter(request: HttpRequest) -> HttpResponse:
    """Enter the panel with a signed link: a GET shows the entry page, its POST signs in.

    Links are ``/panel/enter/#token=...``: the browser never sends the fragment; the page's
    script (static/panel/panel.js) moves the token into the page's form, clears it from the
    address bar and history, and submits the form with the page's CSRF token. A GET never signs
    anyone in nor spends the link: a ``?token=`` link (issued before the fragment form) gets the
    same page, its token in the form. The POST spends the link and starts the panel session
    (identity.py) beside any Django login, which it keeps; it replaces another agent's panel
    session only once asked and confirmed.
    """
    if request.method == "GET":
        return render(request, "panel/enter.html", {"token": request.GET.get("token", "")})
    token = request.POST.get("token", "")
    current = identity.panel_agent(request).agent
    claimed = _another_agents_link(token, current)
    if current is not None and claimed is not None and "switch" not in request.POST:
        # Somebody else's link (a mistake, or a page that wants this browser in their name).
        context = {"ask": True, "token": token, "current": current, "claimed": claimed}
        return render(request, "panel/enter.html", context)
    try:
        entry = links.panel_link_redeem(token=token, context=audit_context(request))
    except links.PanelLinkRefused:
        return render(request, "panel/denied.html", {"link_refused": True}, status=403)
    identity.panel_identity_begin(request, agent=entry.agent, credential=entry.credential)
    return redirect("panel:customer", customer_id=entry.customer.customer_id)


def _another_agents_link(token: str, current: User | None) -> User | None:
    """Return the agent an authentic link names when that isn't `current` (None otherwise)."""
    claimed = links.panel_link_agent_id(token)
    if current is None or claimed is None or claimed == current.pk:
        return None
    return User.objects.filter(pk=claimed).first()


# ---------------------------------------------------------------------------------------------
# The troubleshooting session kept for the agent and customer
# ---------------------------------------------------------------------------------------------


def _stored_session(request: HttpRequest, customer: Customer) -> TroubleshootingSession | None:
    session_id = request.session.get(SESSIONS_KEY, {}).get(customer.customer_id)
    if session_id is None:
        return None
    try:
        session = access_session(session_id=session_id, user=request.user)
    except NotFound:
        return None
    return session if session.customer_id == customer.pk else None


def _remember(request: HttpRequest, customer: Customer, session_id: str | None) -> None:
    stored: dict[str, str] = dict(request.session.get(SESSIONS_KEY, {}))
    stored.pop(customer.customer_id, None)
    if session_id is not None:
        stored[customer.customer_id] = session_id
    # Oldest first (insertion order): forget the customers handled longest ago.
    request.session[SESSIONS_KEY] = dict(list(stored.items())[-REMEMBERED_CUSTOMERS:])


def _troubleshooting_session(request: HttpRequest, customer: Customer) -> TroubleshootingSession:
    """Return the agent's session for the customer, starting one on first use (POSTs only)."""
    session = _stored_session(request, customer)
    if session is None:
        # Counted like the API's session creation, on top of the action's own scope.
        throttling.throttle(request, SESSION_START)
        session = services.session_start(
            customer=customer, agent=acting_user(request), context=audit_context(request)
        )
        _remember(request, customer, str(session.id))
    return session


def _state(customer: Customer, session: TroubleshootingSession | None) -> TwosvState:
    return customer_twosv_state(customer=customer, now=timezone.now(), session=session)


def _back(customer: Customer) -> HttpResponse:
    """Back to the page, at its top: the result of the action shows (and is announced) there."""
    return redirect(reverse("panel:customer", args=[customer.customer_id]))


def _next_step_said(request: HttpRequest, customer: Customer, text: str) -> None:
    """Say the action's result and the step it leads to, in the page's live region."""
    session = _stored_session(request, customer)
    step = _state(customer, session).decision.step
    messages.info(request, f"{text} Next step: {step.title}.")


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


@panel_agent_view(READ)
@require_GET
def customer_panel(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Show the customer's methods, locks, advisories, the next step and the session's forms.

    A read: it writes its audit entry and nothing else. The troubleshooting session starts with
    the agent's first answer or action (a POST).
    """
    customer = access_customer(customer_id=customer_id)
    session = _stored_session(request, customer)
    state = _state(customer, session)
    services.customer_state_read_audit(
        customer=customer,
        actor=acting_user(request),
        step_code=state.decision.step.code,
        context=audit_context(request),
    )
    return render(request, "panel/customer.html", _page_context(customer, session, state))


def _page_context(
    customer: Customer, session: TroubleshootingSession | None, state: TwosvState
) -> dict[str, Any]:
    step = state.decision.step
    p = next((m for m in state.methods if m.method_id == state.decision.method_id), None)
    lookup = state.latest_lookup
    advisories = display.shown_advisories(state.decision.advisories)
    number_changes = {
        a.method_id: m.phone_changed_at
        for a in state.decision.advisories
        if a.code == "number_recently_changed"
        for m in state.methods
        if m.method_id == a.method_id
    }
    return {
        "customer": customer,
        "session": session,
        "session_open": session is None or session.closed_at is None,
        "answers": {
            name: getattr(session, name, None)
            for name in (*services.SESSION_ANSWER_FIELDS, "phone_number_matches")
        },
        "state": state,
        "step": step,
        "step_instructions": display.pieces(step.instructions),
        "step_reason": display.pieces(step.reason),
        # A delivery incident in one of the customer's regions: an outage banner at the top.
        "incidents": [
            {"region": a.region, "since": a.since, "pieces": display.pieces(a.message)}
            for a in state.decision.advisories
            if a.code == "delivery_incident"
        ],
        # Warnings go above the step, info below it: every lock and warning on the first screen.
        "warnings": [
            a for a in advisories if a.severity == "warning" and a.code != "delivery_incident"
        ],
        "infos": [a for a in advisories if a.severity != "warning"],
        "methods": state.methods,
        "number_changes": number_changes,
        "p": p,
        "p_locked": p is not None and p.lock is not None,
        "has_backup": any(
            m.method.role == "backup" and m.status != "removed" for m in state.methods
        ),
        "p_has_phone": p is not None and bool(p.method.phone_number),
        "p_receives_codes": p is not None and p.method.receives_codes,
        "lookup": lookup,
        "lookup_in_flight": lookup is not None and lookup.status in IN_FLIGHT_LOOKUP_STATUSES,
        "lookup_age": display.lookup_age(lookup, now=state.server_time),
        "tries": display.phone_tries(customer.pk, session),
        "alternatives": [ALTERNATIVE_LABELS.get(code, code) for code in step.alternatives],
        "cancel_2sv_url": settings.TWOSV_CANCEL_2SV_URL,
    }


@panel_agent_view(READ)
@require_GET
def lookup_status(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Render the latest lookup's status alone, for the page to poll until it finishes.

    Status and times only (the verdict and next step come with the full page, which is audited
    as a read), so a poll every second or two doesn't flood the audit trail.
    """
    customer = access_customer(customer_id=customer_id)
    state = _state(customer, _stored_session(request, customer))
    lookup = state.latest_lookup
    return render(
        request,
        "panel/_lookup_status.html",
        {
            "customer": customer,
            "lookup": lookup,
            "lookup_in_flight": lookup is not None and lookup.status in IN_FLIGHT_LOOKUP_STATUSES,
            "lookup_age": display.lookup_age(lookup, now=state.server_time),
        },
    )


# ---------------------------------------------------------------------------------------------
# Actions (POST, then back to the page)
# ---------------------------------------------------------------------------------------------


@panel_agent_view(READ)
@require_POST
def answer(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Record the caller's Yes or No to the step's question."""
    customer = access_customer(customer_id=customer_id)
    form = forms.AnswerForm(request.POST)
    if not form.is_valid():
        messages.error(request, "That answer wasn't understood; choose Yes or No.")
        return _back(customer)
    services.session_update(
        session=_troubleshooting_session(request, customer),
        actor=acting_user(request),
        answers=form.answers(),
        context=audit_context(request),
    )
    _next_step_said(request, customer, f"Answer recorded: {form.said()}.")
    return _back(customer)


@panel_agent_view(READ)
@require_POST
def answers_reset(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Forget the device answers (a mis-click), so the questions are asked again."""
    customer = access_customer(customer_id=customer_id)
    services.session_update(
        session=_troubleshooting_session(request, customer),
        actor=acting_user(request),
        answers=dict.fromkeys(services.SESSION_ANSWER_FIELDS),
        context=audit_context(request),
    )
    _next_step_said(request, customer, "Answers cleared.")
    return _back(customer)


@panel_agent_view(READ)
@require_POST
def method_choose(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Troubleshoot another of the customer's methods."""
    customer = access_customer(customer_id=customer_id)
    form = forms.MethodForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the customer's methods.")
        return _back(customer)
    services.session_update(
        session=_troubleshooting_session(request, customer),
        actor=acting_user(request),
        method_id=form.cleaned_data["method_id"],
        context=audit_context(request),
    )
    _next_step_said(request, customer, "Now troubleshooting the method you chose.")
    return _back(customer)


@panel_agent_view(VERIFY_PHONE)
@require_POST
def verify_phone(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Compare the number the caller says with the one on file; show match or no match only."""
    customer = access_customer(customer_id=customer_id)
    form = forms.PhoneForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Type the number the caller says, e.g. +1 415 555 0100.")
        return _back(customer)
    session = _troubleshooting_session(request, customer)
    match = services.session_verify_phone(
        session=session,
        actor=acting_user(request),
        phone_number=form.cleaned_data["phone_number"],
        context=audit_context(request),
    )
    step = _state(customer, _stored_session(request, customer)).decision.step
    if match:
        messages.success(request, f"Match: the number is the one on file. Next step: {step.title}.")
    else:
        messages.warning(
            request, f"No match: the number isn't the one on file. Next step: {step.title}."
        )
    return _back(customer)


@panel_agent_view(LOOKUP)
@require_POST
def lookup_request(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Ask ATS whether codes are being sent to the method being troubleshot."""
    customer = access_customer(customer_id=customer_id)
    form = forms.LookupForm(request.POST)
    force = form.is_valid() and form.cleaned_data["force"]
    state = _state(customer, _troubleshooting_session(request, customer))
    lookup, created = services.lookup_request(
        customer=customer,
        method_id=state.decision.method_id,
        actor=acting_user(request),
        force=force,
        context=audit_context(request),
    )
    if lookup.status in IN_FLIGHT_LOOKUP_STATUSES:
        said = (
            "Asked ATS: the answer shows here when it comes."
            if created
            else "ATS is still working on the lookup asked for recently: its answer shows here."
        )
        messages.info(request, said)
    elif lookup.verdict:
        fresh = "" if created else " (a recent lookup, still fresh)"
        messages.success(request, f"ATS answered{fresh}: {lookup.get_verdict_display()}.")
    else:
        messages.error(request, f"The ATS lookup failed: {lookup.failure_reason}")
    return _back(customer)


@panel_agent_view(None)
@require_POST
def close_session(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Close the session with "Did this solve it?" and the agent's feedback on the step."""
    customer = access_customer(customer_id=customer_id)
    form = forms.CloseForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.missing())
        return _back(customer)
    session = _troubleshooting_session(request, customer)
    services.session_close(
        session=session,
        actor=acting_user(request),
        context=audit_context(request),
        **form.close_arguments(),
    )
    outcome = dict(forms.OUTCOME_CHOICES)[form.cleaned_data["outcome"]]
    messages.success(request, f"Session closed: {outcome}. Thank you for the feedback.")
    return _back(customer)


@panel_agent_view(READ)
@require_POST
def session_new(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Start over with a new session once the current one is closed."""
    customer = access_customer(customer_id=customer_id)
    session = _stored_session(request, customer)
    if session is None or session.closed_at is not None:
        _remember(request, customer, None)
        messages.info(request, "New session: the questions start again.")
    return _back(customer)
