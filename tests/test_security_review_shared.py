"""Security review findings shared with the production-faults work (issue 16, rows 3, 12, 14).

Row 12 (an ATS try has an overall deadline) and row 14 (worker logs masked) are tested with a
real trickling server and a real worker in tests/test_worker_loss.py
(`test_finding_12_...`, `test_finding_14_...`); row 3 is here.
"""

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "a-long-random-production-secret-for-the-test-only-0123456789",
    "ALLOWED_HOSTS": "panel.example.com",
    "DATABASE_URL": "postgres://twosv@db.example.com:5432/twosv",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": os.environ.get("HOME", "/"),
}


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "crm_plugin.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_finding_03_production_refuses_a_per_process_cache():
    """With 4 workers a single-use link opened 4 times and every limit became 4x."""
    refused = start(PRODUCTION)
    shared = start({**PRODUCTION, "CACHE_URL": "redis://cache.example.com:6379/1"})

    assert refused.returncode != 0
    assert "CACHE_URL" in refused.stderr
    assert "started" not in refused.stdout
    assert shared.returncode == 0, shared.stderr
    assert "started" in shared.stdout


def test_finding_03_single_use_links_are_spent_in_the_database_not_the_cache():
    from twosv.models import SpentNonce

    # The nonce table exists and is what crm_plugin/http/links.py spends links in.
    assert SpentNonce._meta.db_table
    source = (ROOT / "crm_plugin" / "http" / "links.py").read_text()
    assert "SpentNonce" in source
    assert "django.core.cache" not in source
    assert settings.CACHES["default"]  # the cache now only counts throttles
