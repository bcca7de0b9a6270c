"""Bench-only settings: the product's settings plus a URL module that mounts the framework floor.

Never used outside `make bench`; the product's URLs stay as they are.
"""

from crm_plugin.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
