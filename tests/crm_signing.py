"""Signing CRM assertions in tests: keys made with `cryptography`, JWTs signed with PyJWT.

`configure_crm(settings)` points the server at the keys below (generic HS256 and RS256, and a
Zendesk account ``acme``); `generic(...)` and `zendesk(...)` sign assertions with sane claims
that a test overrides one at a time.
"""

from __future__ import annotations

import functools
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://crm.example.com"
AUDIENCE = "https://twosv.example.com"
SECRET = "s" * 16 + secrets.token_hex(16)  # 48 characters
ZENDESK_SUBDOMAIN = "acme"
ZENDESK_ISS = "acme.zendesk.com"
ZENDESK_ISSUER = "https://acme.zendesk.com"  # as identities are stored
ZENDESK_AUD = "https://acme.zendesk.com/api/v2/apps/installations/4242.json"


@functools.cache
def rsa_key(name: str = "crm") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str = "crm") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def configure_crm(settings: Any, **overrides: Any) -> None:
    """Accept generic assertions (HS256 secret and an RSA key) and Zendesk's for ``acme``."""
    values = {
        "CRM_JWT_ISSUER": ISSUER,
        "CRM_JWT_AUDIENCE": AUDIENCE,
        "CRM_JWT_SECRET": SECRET,
        "CRM_JWT_SECRET_PREVIOUS": "",
        "CRM_JWT_PUBLIC_KEY": public_pem(rsa_key()),
        "CRM_JWT_JWKS_URL": "",
        "ZENDESK_APP_PUBLIC_KEY": public_pem(rsa_key("zendesk")),
        "ZENDESK_SUBDOMAINS": [ZENDESK_SUBDOMAIN],
        "ZENDESK_APP_AUD": [ZENDESK_AUD],
        "CRM_AGENT_AUTO_PROVISION": False,
        "CRM_AGENT_EMAIL_DOMAINS": [],
    }
    values.update(overrides)
    for name, value in values.items():
        setattr(settings, name, value)


def claims(**overrides: Any) -> dict[str, Any]:
    """Generic claims for agent ``crm-agent-1``, issued now, valid 2 minutes; None drops one."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "crm-agent-1",
        "email": "agent@support.example.com",
        "name": "Ada Agent",
        "jti": secrets.token_hex(8),
        "iat": now,
        "exp": now + 120,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def generic(alg: str = "HS256", key: Any = None, headers: dict | None = None, **overrides) -> str:
    """A generic CRM assertion, HS256 with the configured secret unless told otherwise."""
    if key is None:
        key = {"HS256": SECRET, "RS256": rsa_key(), "ES256": ec_key()}[alg]
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def zendesk_claims(**overrides: Any) -> dict[str, Any]:
    """Claims as Zendesk's signed-URL JWT carries them (see docs/integrations.md)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ZENDESK_ISS,
        "aud": ZENDESK_AUD,
        "sub": 90210,  # the Zendesk user id
        "jti": secrets.token_hex(8),
        "iat": now,
        "exp": now + 120,
        "context": {"product": "support", "location": "ticket_sidebar"},
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def zendesk(key: Any = None, alg: str = "RS256", **overrides: Any) -> str:
    return jwt.encode(
        zendesk_claims(**overrides), key if key is not None else rsa_key("zendesk"), algorithm=alg
    )


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token: header and payload, empty signature."""
    return jwt.encode(payload, None, algorithm="none")


def hmac_signed(payload: dict[str, Any], key: bytes, alg: str = "HS256") -> str:
    """An HMAC token signed with any bytes, a public key's PEM included (PyJWT won't do that)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"
