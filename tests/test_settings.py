"""Start-up configuration: what a deployment with a missing variable does (docs/SPEC.md §2)."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from crm_plugin.settings import env_duration

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "a-long-random-production-secret-for-the-test-only-0123456789",
    "ALLOWED_HOSTS": "panel.example.com",
    "DATABASE_URL": "postgres://twosv@db.example.com:5432/twosv",
    "CACHE_URL": "redis://cache.example.com:6379/1",
}


def _without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in PRODUCTION.items() if k not in names}
    env.update(extra)
    return env


# (case, environment on top of a bare one, error that must name the variable or None for "ok")
CASES: dict[str, tuple[dict[str, str], str | None]] = {
    "production, all set": (PRODUCTION, None),
    "nothing set: embedded defaults": ({}, None),
    "no SECRET_KEY": (_without("SECRET_KEY"), "SECRET_KEY"),
    "no ALLOWED_HOSTS": (_without("ALLOWED_HOSTS"), "ALLOWED_HOSTS"),
    "no DATABASE_URL": (_without("DATABASE_URL"), "DATABASE_URL"),
    "empty SECRET_KEY": (_without(SECRET_KEY=""), "SECRET_KEY"),
    # DATABASE_URL alone means "deployment": DEBUG defaults to off and the secret is required.
    "DATABASE_URL without DEBUG": (_without("DEBUG", "SECRET_KEY"), "SECRET_KEY"),
    "bad duration": (_without(TWOSV_LOCK_DURATION="forever"), "TWOSV_LOCK_DURATION"),
    # Single-use links and throttles need one cache for every worker.
    "per-process cache in production": (_without("CACHE_URL"), "CACHE_URL"),
    # A hard limit below the soft one: the try would be killed before it could record why.
    "time limits in the wrong order": (
        _without(CELERY_TASK_SOFT_TIME_LIMIT="90", CELERY_TASK_TIME_LIMIT="60"),
        "CELERY_TASK_SOFT_TIME_LIMIT",
    ),
    "twilio without credentials": (
        _without(TWOSV_ATS_BACKEND="twilio", TWILIO_ACCOUNT_SID="AC1"),
        "TWILIO_AUTH_TOKEN",
    ),
    "twilio with credentials": (
        _without(TWOSV_ATS_BACKEND="twilio", TWILIO_ACCOUNT_SID="AC1", TWILIO_AUTH_TOKEN="t"),
        None,
    ),
    # The sweeper would hand a try that is still running to a second worker.
    "stale-after shorter than a try": (
        _without(TWOSV_LOOKUP_RUNNING_STALE_AFTER="45s"),
        "TWOSV_LOOKUP_RUNNING_STALE_AFTER",
    ),
}
# Variables of the test run that must not leak into the child.
_CLEAN = {
    name
    for name in os.environ
    if name in PRODUCTION
    or name.startswith(("TWOSV_", "ATS_", "CELERY_", "DJANGO_", "CACHE_", "TWILIO_"))
    or name in {"REQUIRE_SERVICES", "CSRF_TRUSTED_ORIGINS"}
}


@pytest.fixture(scope="module")
def startups() -> dict[str, subprocess.CompletedProcess[str]]:
    """Start Django once per case, all at the same time (each start costs about a second)."""
    base = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    base["DJANGO_SETTINGS_MODULE"] = "crm_plugin.settings"
    running = {
        case: subprocess.Popen(
            [sys.executable, "-c", "import django; django.setup(); print('started')"],
            cwd=ROOT,
            env={**base, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (env, _) in CASES.items()
    }
    done = {}
    for case, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        done[case] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return done


@pytest.mark.parametrize("case", list(CASES))
def test_startup_with_the_environment(startups, case):
    _, missing = CASES[case]
    result = startups[case]

    if missing is None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "started"
    else:
        assert result.returncode != 0
        last_line = result.stderr.strip().splitlines()[-1]
        assert last_line.startswith("django.core.exceptions.ImproperlyConfigured:")
        assert missing in last_line


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("10min", timedelta(minutes=10)),
        ("10m", timedelta(minutes=10)),
        ("90s", timedelta(seconds=90)),
        ("1d", timedelta(days=1)),
        ("1.5h", timedelta(minutes=90)),
        ("600", timedelta(minutes=10)),
        (" 2 h ", timedelta(hours=2)),
    ],
)
def test_durations_parse(monkeypatch, raw, expected):
    monkeypatch.setenv("TWOSV_TEST_DURATION", raw)

    assert env_duration("TWOSV_TEST_DURATION", "1s") == expected


def test_the_default_applies_when_the_variable_is_unset(monkeypatch):
    monkeypatch.delenv("TWOSV_TEST_DURATION", raising=False)

    assert env_duration("TWOSV_TEST_DURATION", "24h") == timedelta(hours=24)


@pytest.mark.parametrize("raw", ["forever", "", "h", "-5h", "10 parsecs", "1h30m", "24 hours"])
def test_a_bad_duration_is_improperly_configured_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("TWOSV_TEST_DURATION", raw)

    with pytest.raises(ImproperlyConfigured, match="TWOSV_TEST_DURATION"):
        env_duration("TWOSV_TEST_DURATION", "24h")


def test_the_lock_policy_defaults_are_the_articles(settings):
    assert settings.TWOSV_RESEND_LOCK_THRESHOLD == 200
    assert settings.TWOSV_LOCK_DURATION.total_seconds() == 24 * 3600
    assert settings.TWOSV_RESEND_WINDOW.total_seconds() == 24 * 3600
