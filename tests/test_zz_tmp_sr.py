import os
import pytest
from django.contrib.auth.models import Group
from django.db import connection
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True)]

@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox","--disable-gpu"])
        yield b
        b.close()

@pytest.mark.parametrize("n", [1, 2, 3])
def test_groups(n, live_server, browser):
    print(n, hasattr(connection, "_test_serialized_contents"), list(Group.objects.values_list("name", flat=True)))
    assert Group.objects.exists()
