"""Signed CRM assertions (docs/SPEC.md §9): every claim failure, generic and Zendesk form.

Keys are made here with `cryptography`; tokens are signed with PyJWT (tests/crm_signing.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured

from crm_plugin.crm import assertions
from crm_plugin.crm.apps import CrmConfig
from crm_plugin.crm.assertions import AssertionRejected, assertion_verify
from crm_plugin.crm.models import UsedAssertion
from tests import crm_signing as signing

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _crm(settings) -> None:
    signing.configure_crm(settings)


def rejected(token: str, form: str | None = None) -> AssertionRejected:
    with pytest.raises(AssertionRejected) as caught:
        assertion_verify(token, form=form)
    return caught.value


# (case id, claims wrong at a time given the time now, expected reason), for both forms.
_FAILURES: list[tuple[str, Callable[[int], dict[str, Any]], str]] = [
    ("expired", lambda now: {"iat": now - 400, "exp": now - 200}, "expired"),
    ("not yet valid (nbf)", lambda now: {"nbf": now + 120}, "not_yet_valid"),
    ("iat in the future", lambda now: {"iat": now + 90, "exp": now + 180}, "issued_in_future"),
    ("lifetime over 5 minutes", lambda now: {"iat": now, "exp": now + 301}, "lifetime_too_long"),
    ("exp before iat", lambda now: {"iat": now, "exp": now - 1}, "invalid_claim"),
    ("no jti", lambda now: {"jti": None}, "missing_claim"),
    ("empty jti", lambda now: {"jti": ""}, "invalid_claim"),
    ("no exp", lambda now: {"exp": None}, "missing_claim"),
    ("no iat", lambda now: {"iat": None}, "missing_claim"),
    ("no sub", lambda now: {"sub": None}, "missing_claim"),
    ("wrong audience", lambda now: {"aud": "https://other.example.com"}, "audience_mismatch"),
    ("no audience", lambda now: {"aud": None}, "missing_claim"),
    ("exp as a string", lambda now: {"exp": str(now + 60)}, "invalid_claim"),
]
CLAIM_FAILURES = [pytest.param(claims, reason, id=case) for case, claims, reason in _FAILURES]


# ---------------------------------------------------------------------------------------------
# The generic form
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_a_generic_assertion_verifies_with_each_key_type(settings, alg):
    if alg == "ES256":
        settings.CRM_JWT_PUBLIC_KEY = signing.public_pem(signing.ec_key())

    verified = assertion_verify(signing.generic(alg, customer_id="cust-1"))

    assert verified.form == "generic"
    assert verified.issuer == signing.ISSUER
    assert (verified.subject, verified.email, verified.name) == (
        "crm-agent-1",
        "agent@support.example.com",
        "Ada Agent",
    )
    assert verified.customer_id == "cust-1"
    assert UsedAssertion.objects.filter(jti=verified.jti, issuer=signing.ISSUER).exists()


@pytest.mark.parametrize(("wrong", "reason"), CLAIM_FAILURES)
def test_a_generic_assertion_with_a_bad_claim_is_rejected(wrong, reason):
    assert rejected(signing.generic(**wrong(int(time.time())))).reason == reason


def test_a_generic_assertion_without_email_is_rejected():
    assert rejected(signing.generic(email=None)).reason == "missing_claim"


def test_a_generic_assertion_from_another_issuer_is_rejected():
    exc = rejected(signing.generic(iss="https://evil.example.com"))

    assert exc.reason == "issuer_mismatch"
    assert exc.claimed_issuer == "https://evil.example.com"


def test_a_generic_assertion_with_a_wrong_signature_is_rejected():
    assert rejected(signing.generic(key="another-secret-of-enough-length-000000")).reason == (
        "bad_signature"
    )
    assert rejected(signing.generic("RS256", key=signing.rsa_key("other"))).reason == (
        "bad_signature"
    )


def test_a_tampered_payload_fails_the_signature():
    header, _payload, signature = signing.generic().split(".")
    forged = signing.generic(key="x" * 40, sub="admin").split(".")[1]

    assert rejected(f"{header}.{forged}.{signature}").reason == "bad_signature"


def test_a_replayed_jti_is_rejected_even_after_the_first_use_succeeded():
    token = signing.generic(jti="once-only")
    assertion_verify(token)

    exc = rejected(token)
    again = rejected(signing.generic(jti="once-only"))  # a new token, the same jti

    assert exc.reason == again.reason == "replayed"
    assert UsedAssertion.objects.filter(jti="once-only").count() == 1


def test_the_same_jti_from_another_issuer_is_another_assertion():
    assertion_verify(signing.generic(jti="shared-jti"))

    assert assertion_verify(signing.zendesk(jti="shared-jti")).jti == "shared-jti"


def test_spent_jtis_are_purged_once_their_assertion_has_expired(time_machine):
    assertion_verify(signing.generic(jti="old-one"))
    time_machine.move_to(timedelta(minutes=10), tick=False)

    assertion_verify(signing.generic(jti="new-one"))

    assert list(UsedAssertion.objects.values_list("jti", flat=True)) == ["new-one"]


def test_alg_none_is_rejected():
    token = signing.unsigned(signing.claims())

    assert rejected(token).reason == "algorithm_not_allowed"


def test_hs256_signed_with_the_public_key_is_rejected(settings):
    """The classic confusion: the RSA public key's PEM used as an HMAC secret."""
    settings.CRM_JWT_SECRET = ""  # only the key pair is configured
    pem = signing.public_pem(signing.rsa_key()).encode()

    exc = rejected(signing.hmac_signed(signing.claims(), pem))

    assert exc.reason == "algorithm_not_allowed"


def test_hs256_signed_with_the_public_key_fails_even_with_a_secret_configured():
    pem = signing.public_pem(signing.rsa_key()).encode()

    assert rejected(signing.hmac_signed(signing.claims(), pem)).reason == "bad_signature"


def test_an_algorithm_the_key_does_not_allow_is_rejected(settings):
    settings.CRM_JWT_PUBLIC_KEY = ""  # the secret only: RS256 has no key
    assert rejected(signing.generic("RS256")).reason == "algorithm_not_allowed"
    assert rejected(signing.generic("HS512", key=signing.SECRET * 2)).reason == (
        "algorithm_not_allowed"
    )


def test_an_ec_token_is_not_verified_with_an_rsa_key():
    # Only an RSA key is configured: ES256 names no key of its type.
    assert rejected(signing.generic("ES256")).reason == "algorithm_not_allowed"


@pytest.mark.parametrize(
    "token", ["", "not-a-jwt", "a.b.c", "x" * 9000, "eyJhbGciOiJIUzI1NiJ9.e30"]
)
def test_malformed_assertions_are_rejected(token):
    assert rejected(token).reason == "malformed"


def test_nothing_configured_means_not_configured(settings):
    signing.configure_crm(
        settings, CRM_JWT_ISSUER="", CRM_JWT_SECRET="", CRM_JWT_PUBLIC_KEY="", ZENDESK_SUBDOMAINS=[]
    )

    assert rejected(signing.generic()).reason == "not_configured"


def test_the_previous_secret_still_verifies_while_rotating(settings):
    old = signing.SECRET
    settings.CRM_JWT_SECRET = "n" * 40
    settings.CRM_JWT_SECRET_PREVIOUS = old

    assert assertion_verify(signing.generic(key=old)).subject == "crm-agent-1"
    assert assertion_verify(signing.generic(key="n" * 40)).subject == "crm-agent-1"


def test_two_public_keys_verify_while_rotating(settings):
    settings.CRM_JWT_PUBLIC_KEY = signing.public_pem(signing.rsa_key("old")) + signing.public_pem(
        signing.rsa_key()
    )

    assert assertion_verify(signing.generic("RS256", key=signing.rsa_key("old"))).form == "generic"
    assert assertion_verify(signing.generic("RS256")).form == "generic"


def test_a_jwks_url_supplies_the_key_by_kid(settings, monkeypatch):
    settings.CRM_JWT_PUBLIC_KEY = ""
    settings.CRM_JWT_JWKS_URL = "https://crm.example.com/.well-known/jwks.json"
    jwk = jwt.PyJWK.from_dict(
        {**jwt.algorithms.RSAAlgorithm.to_jwk(signing.rsa_key().public_key(), as_dict=True)}
        | {"kid": "k1", "alg": "RS256", "use": "sig"}
    )
    fetched: list[str] = []

    def fetch(self):
        fetched.append(self.uri)
        return {"keys": [jwk._jwk_data]}

    monkeypatch.setattr(jwt.PyJWKClient, "fetch_data", fetch)

    verified = assertion_verify(signing.generic("RS256", headers={"kid": "k1"}))
    unknown = rejected(signing.generic("RS256", headers={"kid": "k2"}))

    assert verified.subject == "crm-agent-1"
    assert unknown.reason == "unknown_key"
    assert fetched  # the key set came from the URL (and is cached by PyJWKClient)


# ---------------------------------------------------------------------------------------------
# The Zendesk form
# ---------------------------------------------------------------------------------------------


def test_a_zendesk_assertion_verifies_and_names_the_zendesk_user():
    verified = assertion_verify(signing.zendesk())

    assert verified.form == "zendesk"
    assert verified.issuer == signing.ZENDESK_ISSUER
    assert verified.subject == "90210"  # Zendesk's numeric user id, as a string
    assert verified.customer_id is None  # the bootstrap page asks the ZAF client


@pytest.mark.parametrize("iss", ["acme.zendesk.com", "https://acme.zendesk.com"])
def test_the_zendesk_issuer_is_accepted_with_or_without_the_scheme(iss):
    assert assertion_verify(signing.zendesk(iss=iss), form="zendesk").issuer == (
        signing.ZENDESK_ISSUER
    )


@pytest.mark.parametrize(("wrong", "reason"), CLAIM_FAILURES)
def test_a_zendesk_assertion_with_a_bad_claim_is_rejected(wrong, reason):
    token = signing.zendesk(**wrong(int(time.time())))

    assert rejected(token, form="zendesk").reason == reason


def test_a_zendesk_assertion_from_another_account_is_rejected():
    token = signing.zendesk(iss="evil.zendesk.com")

    assert rejected(token, form="zendesk").reason == "issuer_mismatch"


def test_a_zendesk_assertion_for_another_installation_is_rejected():
    aud = "https://acme.zendesk.com/api/v2/apps/installations/1.json"

    assert rejected(signing.zendesk(aud=aud), form="zendesk").reason == "audience_mismatch"


def test_a_zendesk_assertion_signed_by_another_key_is_rejected():
    token = signing.zendesk(key=signing.rsa_key("not-zendesk"))

    assert rejected(token, form="zendesk").reason == "bad_signature"


def test_a_replayed_zendesk_assertion_is_rejected():
    token = signing.zendesk()
    assertion_verify(token, form="zendesk")

    assert rejected(token, form="zendesk").reason == "replayed"


def test_zendesk_alg_none_is_rejected():
    token = signing.unsigned(signing.zendesk_claims())

    assert rejected(token, form="zendesk").reason == "algorithm_not_allowed"


def test_zendesk_hs256_with_the_apps_public_key_is_rejected():
    pem = signing.public_pem(signing.rsa_key("zendesk")).encode()

    token = signing.hmac_signed(signing.zendesk_claims(), pem)

    assert rejected(token, form="zendesk").reason == "algorithm_not_allowed"


def test_zendesk_es256_is_not_accepted():
    assert rejected(signing.zendesk(key=signing.ec_key(), alg="ES256"), form="zendesk").reason == (
        "algorithm_not_allowed"
    )


def test_a_generic_assertion_is_not_a_zendesk_one():
    """The Zendesk launch pins its form: a CRM's HS256 token can't pass for Zendesk's."""
    assert rejected(signing.generic(), form="zendesk").reason == "algorithm_not_allowed"
    assert rejected(signing.generic("RS256"), form="zendesk").reason == "bad_signature"


def test_a_zendesk_issuer_selects_the_zendesk_keys_not_the_crm_secret():
    token = signing.generic(iss=signing.ZENDESK_ISS, aud=signing.ZENDESK_AUD)

    exc = rejected(token)

    assert (exc.form, exc.reason) == ("zendesk", "algorithm_not_allowed")


# ---------------------------------------------------------------------------------------------
# Configuration is checked at start-up
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CRM_JWT_SECRET": "short"}, "CRM_JWT_SECRET must be at least 32 bytes"),
        ({"CRM_JWT_PUBLIC_KEY": "not a pem"}, "CRM_JWT_PUBLIC_KEY: no PEM public key"),
        ({"CRM_JWT_ISSUER": ""}, "CRM_JWT_ISSUER and CRM_JWT_AUDIENCE are required"),
        ({"ZENDESK_APP_AUD": []}, "ZENDESK_SUBDOMAINS and ZENDESK_APP_AUD are required"),
        ({"ZENDESK_SUBDOMAINS": ["acme.zendesk.com"]}, "is not a Zendesk subdomain"),
    ],
)
def test_bad_configuration_stops_start_up(settings, overrides, message):
    signing.configure_crm(settings, **overrides)

    with pytest.raises(ImproperlyConfigured, match=message):
        CrmConfig("crm_plugin.crm", __import__("crm_plugin.crm")).ready()


def test_a_private_or_weak_key_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private = (
        signing.rsa_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    weak = signing.public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    p384 = signing.public_pem(ec.generate_private_key(ec.SECP384R1()))

    for pem, message in [(private, "private"), (weak, "2048"), (p384, "P-256")]:
        with pytest.raises(ValueError, match=message):
            assertions.pem_public_keys(pem)


def test_a_pem_key_fits_in_one_variable_with_escaped_newlines():
    pem = signing.public_pem(signing.rsa_key()).replace("\n", "\\n")

    assert [key.algorithm for key in assertions.pem_public_keys(pem)] == ["RS256"]
