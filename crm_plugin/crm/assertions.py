"""Signed assertions from a CRM, verified with PyJWT (docs/SPEC.md §9).

Two forms:

- **generic**: a JWT the CRM signs itself, HS256 with ``CRM_JWT_SECRET`` or RS256/ES256 with
  ``CRM_JWT_PUBLIC_KEY`` (PEM, several allowed for a rotation) or ``CRM_JWT_JWKS_URL``; ``iss`` is
  ``CRM_JWT_ISSUER``, ``aud`` ``CRM_JWT_AUDIENCE``; claims ``sub``, ``email``, ``name``?, ``jti``,
  ``customer_id``?.
- **zendesk**: the JWT Zendesk posts (form field ``token``) when it loads an app with
  ``signedUrls: true``: RS256 with the app's public key ``ZENDESK_APP_PUBLIC_KEY``; ``iss`` is the
  account's host (``<subdomain>.zendesk.com``, with or without ``https://``) for a subdomain in
  ``ZENDESK_SUBDOMAINS``; ``aud`` one of ``ZENDESK_APP_AUD`` (the installation's URL); ``sub`` the
  Zendesk user.

Every assertion needs a signature that verifies with a configured key, under the one algorithm
that key's type allows (``none`` never; a public key never as an HMAC secret), and ``exp``,
``iat`` (not in the future), ``nbf`` if present, ``iss``, ``aud``, a lifetime (``exp - iat``) of at
most five minutes, and a ``jti`` used once: spent ids are kept in the database (`UsedAssertion`)
until the assertion expires, so every worker agrees. A failure raises `AssertionRejected` with a
reason code and a message meant for the integrator; the token itself is never logged or stored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from crm_plugin.crm.models import UsedAssertion

GENERIC = "generic"
ZENDESK = "zendesk"
MAX_LIFETIME = timedelta(minutes=5)
# Clock skew tolerated between the CRM and us, on exp, nbf and iat.
LEEWAY = timedelta(seconds=30)
MAX_ASSERTION_LENGTH = 8192
MIN_SECRET_LENGTH = 32
MIN_RSA_BITS = 2048
_ID_MAX = 255  # UsedAssertion.jti, CrmIdentity.subject and issuer
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class AssertionRejected(Exception):
    """The assertion doesn't verify. ``reason`` is a stable code, ``message`` says what to fix."""

    def __init__(self, reason: str, message: str, *, form: str = "", claimed_issuer: str = ""):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.form = form
        # What the (unverified) token said its issuer was, for the audit trail; never trusted.
        self.claimed_issuer = claimed_issuer


@dataclass(frozen=True)
class VerifiedAssertion:
    """What a verified assertion says about its agent."""

    form: str
    issuer: str  # normalized: CRM_JWT_ISSUER, or https://<subdomain>.zendesk.com
    subject: str
    jti: str
    expires_at: datetime
    email: str = ""
    name: str = ""
    customer_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class _Key:
    algorithm: str
    key: Any


# ---------------------------------------------------------------------------------------------
# Keys: one algorithm per key type
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def pem_public_keys(text: str) -> tuple[_Key, ...]:
    """Parse every PEM public key (or certificate) in `text`; RSA → RS256, EC P-256 → ES256.

    ``\\n`` escapes are accepted, so a key fits in one environment variable. Raises ValueError
    for anything else (a private key, a short RSA key, another curve).
    """
    text = text.replace("\\n", "\n")
    keys = []
    for match in _PEM.finditer(text):
        block, kind = match.group(0).encode(), match.group(1)
        public: Any
        if "PRIVATE" in kind:
            raise ValueError("a private key was given where a public key belongs")
        if kind == "CERTIFICATE":
            public = x509.load_pem_x509_certificate(block).public_key()
        else:
            public = serialization.load_pem_public_key(block)
        keys.append(_Key(_algorithm_for(public), public))
    if text.strip() and not keys:
        raise ValueError("no PEM public key found")
    return tuple(keys)


def _algorithm_for(public: Any) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("only RSA (RS256) and EC P-256 (ES256) public keys are accepted")


@functools.lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One client per URL and process: it caches the key set (5 min) and each key by kid.
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)


def _generic_keys(token: str, header: dict[str, Any]) -> list[_Key]:
    keys: list[_Key] = []
    for secret in (settings.CRM_JWT_SECRET, settings.CRM_JWT_SECRET_PREVIOUS):
        if secret:
            keys.append(_Key("HS256", secret.encode()))
    keys.extend(pem_public_keys(settings.CRM_JWT_PUBLIC_KEY))
    if settings.CRM_JWT_JWKS_URL and header.get("alg") in ("RS256", "ES256"):
        try:
            jwk = _jwks_client(settings.CRM_JWT_JWKS_URL).get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AssertionRejected(
                "key_unavailable", "The key set at CRM_JWT_JWKS_URL could not be fetched."
            ) from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise AssertionRejected(
                "unknown_key",
                "No key in the key set at CRM_JWT_JWKS_URL matches the assertion's kid.",
            ) from exc
        try:
            keys.append(_Key(_algorithm_for(jwk.key), jwk.key))
        except ValueError as exc:
            raise AssertionRejected("unknown_key", f"The key set's key: {exc}.") from exc
    return keys


# ---------------------------------------------------------------------------------------------
# The forms
# ---------------------------------------------------------------------------------------------


def zendesk_issuers() -> dict[str, str]:
    """Return {accepted iss: normalized issuer} for the subdomains in ZENDESK_SUBDOMAINS."""
    accepted = {}
    for subdomain in settings.ZENDESK_SUBDOMAINS:
        host = f"{subdomain.strip().lower()}.zendesk.com"
        for form in (host, f"https://{host}", f"https://{host}/"):
            accepted[form] = f"https://{host}"
    return accepted


@dataclass(frozen=True)
class _Form:
    name: str
    keys: list[_Key]
    issuers: dict[str, str]  # accepted iss → normalized issuer
    audiences: list[str]
    required: tuple[str, ...]


def _form(name: str, token: str, header: dict[str, Any]) -> _Form:
    if name == ZENDESK:
        return _Form(
            name=ZENDESK,
            keys=[
                k
                for k in pem_public_keys(settings.ZENDESK_APP_PUBLIC_KEY)
                if k.algorithm == "RS256"
            ],
            issuers=zendesk_issuers(),
            audiences=list(settings.ZENDESK_APP_AUD),
            required=("exp", "iat", "iss", "aud", "sub", "jti"),
        )
    issuer = settings.CRM_JWT_ISSUER
    return _Form(
        name=GENERIC,
        keys=_generic_keys(token, header) if issuer else [],
        issuers={issuer: issuer} if issuer else {},
        audiences=[settings.CRM_JWT_AUDIENCE] if settings.CRM_JWT_AUDIENCE else [],
        required=("exp", "iat", "iss", "aud", "sub", "jti", "email"),
    )


def configured_forms() -> list[str]:
    """Return the forms this server is configured to accept."""
    forms = []
    if settings.CRM_JWT_ISSUER and settings.CRM_JWT_AUDIENCE:
        forms.append(GENERIC)
    if settings.ZENDESK_APP_PUBLIC_KEY and settings.ZENDESK_SUBDOMAINS and settings.ZENDESK_APP_AUD:
        forms.append(ZENDESK)
    return forms


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def assertion_verify(token: Any, *, form: str | None = None) -> VerifiedAssertion:
    """Verify `token` and spend its jti; return what it says, or raise AssertionRejected.

    `form` pins the form (the panel's Zendesk launch passes ``zendesk``); without it the form
    is chosen by the unverified ``iss``: a configured Zendesk account's host means Zendesk. That
    choice only picks which keys and claims apply; it trusts nothing.
    """
    if not isinstance(token, str) or not token.strip():
        raise AssertionRejected("malformed", "No assertion was sent.")
    if len(token) > MAX_ASSERTION_LENGTH:
        raise AssertionRejected(
            "malformed", f"The assertion is over {MAX_ASSERTION_LENGTH} characters."
        )
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise AssertionRejected("malformed", "The assertion is not a well-formed JWT.") from exc
    claimed = unverified.get("iss")
    claimed_issuer = claimed[:_ID_MAX] if isinstance(claimed, str) else ""
    if form is None:
        form = ZENDESK if claimed_issuer in zendesk_issuers() else GENERIC
    try:
        return _verify(token, header, form)
    except AssertionRejected as exc:
        exc.form, exc.claimed_issuer = form, claimed_issuer
        raise


def _verify(token: str, header: dict[str, Any], form_name: str) -> VerifiedAssertion:
    form = _form(form_name, token, header)
    if not form.keys or not form.issuers or not form.audiences:
        raise AssertionRejected(
            "not_configured", f"This server is not configured for {form_name} assertions."
        )
    alg = header.get("alg")
    allowed = sorted({key.algorithm for key in form.keys})
    if alg not in allowed:
        raise AssertionRejected(
            "algorithm_not_allowed",
            f"The assertion is signed with alg={str(alg)[:20]!r}; this server accepts "
            f"{', '.join(allowed)} for {form_name} assertions.",
        )
    claims = _decode(token, [key for key in form.keys if key.algorithm == alg], form)
    issuer = form.issuers[claims["iss"]]
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AssertionRejected("invalid_claim", f"'{name}' must be a number (seconds).")
    lifetime = claims["exp"] - claims["iat"]
    if lifetime > MAX_LIFETIME.total_seconds():
        raise AssertionRejected(
            "lifetime_too_long",
            f"exp - iat is {int(lifetime)} s; at most {int(MAX_LIFETIME.total_seconds())} s "
            "is accepted.",
        )
    if lifetime <= 0:
        raise AssertionRejected("invalid_claim", "exp must come after iat.")
    jti = _identifier(claims, "jti")
    subject = _identifier(claims, "sub")
    expires_at = datetime.fromtimestamp(claims["exp"], tz=UTC)
    _spend(issuer, jti, expires_at)
    email, name = _person(claims)
    customer_id = claims.get("customer_id")
    if customer_id is not None and (not isinstance(customer_id, str) or len(customer_id) > 64):
        raise AssertionRejected(
            "invalid_claim", "customer_id must be a string of 64 characters at most."
        )
    return VerifiedAssertion(
        form=form.name,
        issuer=issuer,
        subject=subject,
        jti=jti,
        expires_at=expires_at,
        email=email,
        name=name,
        customer_id=customer_id or None,
        claims=claims,
    )


def _decode(token: str, keys: list[_Key], form: _Form) -> dict[str, Any]:
    """Decode with each candidate key (a rotation may configure two); map failures to reasons."""
    # sub and jti are checked below: a Zendesk user id may come as a number.
    options = {"require": list(form.required), "verify_sub": False, "verify_jti": False}
    for index, key in enumerate(keys):
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=form.audiences,
                issuer=list(form.issuers),
                leeway=LEEWAY,
                options=options,  # type: ignore[arg-type]
            )
            return claims
        except jwt.InvalidSignatureError as exc:
            if index == len(keys) - 1:
                raise AssertionRejected(
                    "bad_signature",
                    "The signature does not verify with the configured key.",
                ) from exc
        except jwt.InvalidTokenError as exc:
            raise _rejection(exc) from exc
    raise AssertionRejected("bad_signature", "The signature does not verify.")  # pragma: no cover


def _rejection(exc: jwt.InvalidTokenError) -> AssertionRejected:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AssertionRejected("expired", "The assertion has expired (exp is in the past).")
    if isinstance(exc, jwt.ImmatureSignatureError):
        if "iat" in str(exc):
            return AssertionRejected("issued_in_future", "The assertion's iat is in the future.")
        return AssertionRejected("not_yet_valid", "The assertion is not valid yet (nbf).")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AssertionRejected("issuer_mismatch", "The issuer (iss) is not the one configured.")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AssertionRejected("audience_mismatch", "The audience (aud) is not this server's.")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AssertionRejected("missing_claim", f"The assertion has no '{exc.claim}' claim.")
    if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return AssertionRejected("algorithm_not_allowed", "The algorithm does not fit the key.")
    if isinstance(exc, jwt.DecodeError):
        return AssertionRejected("malformed", "The assertion is not a well-formed JWT.")
    return AssertionRejected("invalid_claim", f"A claim is invalid: {str(exc)[:120]}")


def _identifier(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a Zendesk user id may come as a number
    if not isinstance(value, str) or not value.strip() or len(value) > _ID_MAX:
        raise AssertionRejected(
            "invalid_claim" if value is not None else "missing_claim",
            f"'{name}' must be a non-empty string of {_ID_MAX} characters at most.",
        )
    return value


def _person(claims: dict[str, Any]) -> tuple[str, str]:
    """Return (email, name): top-level claims, or a nested ``user`` object (Zendesk context)."""
    user = claims.get("user")
    nested: dict[str, Any] = user if isinstance(user, dict) else {}
    email = claims.get("email", nested.get("email", ""))
    name = claims.get("name", nested.get("name", ""))
    email = email.strip().lower() if isinstance(email, str) and len(email) <= 254 else ""
    name = name.strip()[:150] if isinstance(name, str) else ""
    return email, name


def _spend(issuer: str, jti: str, expires_at: datetime) -> None:
    """Record (issuer, jti) as used, or refuse it as replayed (whichever worker saw it first)."""
    now = timezone.now()
    # Rows whose assertion can no longer verify: a range delete on an index, a few rows at most.
    UsedAssertion.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives
            UsedAssertion.objects.create(issuer=issuer, jti=jti, expires_at=expires_at + LEEWAY)
    except IntegrityError as exc:
        raise AssertionRejected(
            "replayed", "This assertion's jti was used already: sign a new assertion each time."
        ) from exc


def configuration_errors() -> list[str]:
    """Return what is wrong with the CRM settings (checked at start-up), or nothing."""
    errors = []
    secrets: Sequence[str] = (settings.CRM_JWT_SECRET, settings.CRM_JWT_SECRET_PREVIOUS)
    for name, secret in zip(("CRM_JWT_SECRET", "CRM_JWT_SECRET_PREVIOUS"), secrets, strict=True):
        if secret and len(secret.encode()) < MIN_SECRET_LENGTH:
            errors.append(f"{name} must be at least {MIN_SECRET_LENGTH} bytes long.")
    for name in ("CRM_JWT_PUBLIC_KEY", "ZENDESK_APP_PUBLIC_KEY"):
        try:
            pem_public_keys(getattr(settings, name))
        except ValueError as exc:
            errors.append(f"{name}: {exc}.")
    generic_key = (
        settings.CRM_JWT_SECRET or settings.CRM_JWT_PUBLIC_KEY or settings.CRM_JWT_JWKS_URL
    )
    if generic_key and not (settings.CRM_JWT_ISSUER and settings.CRM_JWT_AUDIENCE):
        errors.append("CRM_JWT_ISSUER and CRM_JWT_AUDIENCE are required with a CRM JWT key.")
    if settings.ZENDESK_APP_PUBLIC_KEY and not (
        settings.ZENDESK_SUBDOMAINS and settings.ZENDESK_APP_AUD
    ):
        errors.append(
            "ZENDESK_SUBDOMAINS and ZENDESK_APP_AUD are required with ZENDESK_APP_PUBLIC_KEY."
        )
    for subdomain in settings.ZENDESK_SUBDOMAINS:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", subdomain.strip().lower()):
            errors.append(f"ZENDESK_SUBDOMAINS: {subdomain!r} is not a Zendesk subdomain (acme).")
    return errors
