"""Settings for twosv-panel: one file, driven by the environment (12-factor).

With nothing set, the embedded defaults run the whole product on one machine: SQLite under
``var/``, Celery eager with an in-memory broker, the local (database) ATS backend and DEBUG on.
Setting ``DATABASE_URL`` means "this is a real deployment": DEBUG then defaults to off, and with
DEBUG off a missing ``SECRET_KEY``, ``ALLOWED_HOSTS`` or ``DATABASE_URL`` stops start-up.
"""

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|h|min|m|s|)\s*$")
_UNITS = {"d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1, "": 1}


def env_duration(name: str, default: str) -> timedelta:
    """Read a duration such as ``24h``, ``10min``, ``90s``, ``1d`` or plain seconds."""
    raw = env.str(name, default=default)
    match = _DURATION.match(raw)
    if not match:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a duration (examples: 24h, 10min, 90s).")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _require(name: str) -> None:
    if not env.str(name, default=""):
        raise ImproperlyConfigured(
            f"{name} must be set when DEBUG is off (see the configuration table in README.md)."
        )


DEBUG = env.bool("DEBUG", default="DATABASE_URL" not in env)

if not DEBUG:
    for _name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"):
        _require(_name)


def dev_secret_key(path: Path) -> str:
    """Return the embedded default's key: random, made on first start, kept in `path` (0600).

    One per checkout, in ``var/`` (git-ignored), never a key written in the repository: a
    published key would let anyone who reaches the dev server forge a panel link. Processes
    starting together agree: each writes its own candidate and links it into place, and a
    process that finds the file already there reads it.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(64) + "\n")
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the key
        finally:
            candidate.unlink()
    key = path.read_text().strip()
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable key: delete it to make a new one.")
    return key


# True when the embedded default runs on the generated per-checkout key: `runserver` then
# serves on loopback only (twosv/management/commands/runserver.py).
DEV_SECRET_KEY_IN_USE = not env.str("SECRET_KEY", default="")
SECRET_KEY = (
    dev_secret_key(VAR_DIR / "secret_key") if DEV_SECRET_KEY_IN_USE else env.str("SECRET_KEY")
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: its `runserver` (loopback only on the dev key) is the one that runs.
    "twosv",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    # Agents identified by their CRM (docs/SPEC.md §9): assertions, identities, access tokens.
    "crm_plugin.crm",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the panel's static files under gunicorn: no separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "crm_plugin.middleware.RequestLogMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # A framed panel's session rides in the X-Panel-Session header, not a cookie (SPEC §9).
    "crm_plugin.panel.frame_session.PanelFrameSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees what escaped the view: JSON 500/503 under /api/, never an HTML page.
    "crm_plugin.faults.ApiFaultMiddleware",
]

ROOT_URLCONF = "crm_plugin.urls"
WSGI_APPLICATION = "crm_plugin.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "crm_plugin" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Fail fast (readiness answers 503) instead of hanging when PostgreSQL is away.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Behind a pooler in transaction mode (PgBouncer's pool_mode = transaction) a server-side
    # cursor outside a transaction would outlive the server connection it was declared on
    # (Django's docs, "Transaction pooling and server-side cursors"). Nothing else the app runs
    # keeps session state: no prepared statements, SET, advisory locks, LISTEN or temp tables.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DISABLE_SERVER_SIDE_CURSORS", default=False
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default keeps its file under var/; create it so a fresh clone just works.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
if not DEBUG and CACHES["default"]["BACKEND"].endswith("LocMemCache"):
    # Every throttle counts in the cache: a per-process cache gives each gunicorn worker its
    # own count, so every limit is multiplied by the number of workers.
    raise ImproperlyConfigured(
        "CACHE_URL must name a cache shared by every process (redis://...) when DEBUG is off; "
        "with a per-process (locmem) cache every throttle would count per worker."
    )
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # A cache that is down must answer fast: throttles and the advisory cache then fall back
    # (fail open, or read the database) instead of holding the request.
    CACHES["default"].setdefault("OPTIONS", {}).update(
        {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "retry_on_timeout": False}
    )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
if STATIC_ROOT == VAR_DIR / "static":
    # WhiteNoise warns about a missing root on every start; collectstatic fills it in production.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# The sidebar panel's CSS and JS (crm_plugin is the project, not an app).
STATICFILES_DIRS = [BASE_DIR / "crm_plugin" / "static"]

# --- Security (production values apply whenever DEBUG is off) -------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The CRM frames the sidebar panel: these origins may, through CSP frame-ancestors on the panel's
# pages only (every other page keeps X-Frame-Options DENY). Empty: this site alone.
CRM_PANEL_FRAME_ANCESTORS = env.list("CRM_PANEL_FRAME_ANCESTORS", default=[])
for _origin in CRM_PANEL_FRAME_ANCESTORS:
    if not re.fullmatch(r"https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?", _origin):
        raise ImproperlyConfigured(
            f"CRM_PANEL_FRAME_ANCESTORS: {_origin!r} is not an origin like https://crm.example.com."
        )
# A CRM on another site frames the panel: browsers send the session and CSRF cookies inside that
# frame only when they are SameSite=None (and Secure, so DEBUG off).
SESSION_COOKIE_SAMESITE = env.str("SESSION_COOKIE_SAMESITE", default="Lax")
CSRF_COOKIE_SAMESITE = env.str("CSRF_COOKIE_SAMESITE", default="Lax")
# A panel session (entered through a signed link) ends this long after entry at the latest, and
# sooner when the agent loses access (crm_plugin/panel/identity.py).
CRM_PANEL_SESSION_TTL = env_duration("CRM_PANEL_SESSION_TTL", "8h")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- CRM identity (docs/SPEC.md §9, crm_plugin/crm/, docs/integrations.md) ---------------------
# Generic CRM JWT: HS256 with the secret (the previous one too, while rotating), or RS256/ES256
# with PEM public keys (several allowed while rotating) or a JWKS URL; iss and aud as below.
CRM_JWT_ISSUER = env.str("CRM_JWT_ISSUER", default="")
CRM_JWT_AUDIENCE = env.str("CRM_JWT_AUDIENCE", default="")
CRM_JWT_SECRET = env.str("CRM_JWT_SECRET", default="")
CRM_JWT_SECRET_PREVIOUS = env.str("CRM_JWT_SECRET_PREVIOUS", default="")
CRM_JWT_PUBLIC_KEY = env.str("CRM_JWT_PUBLIC_KEY", default="")
CRM_JWT_JWKS_URL = env.str("CRM_JWT_JWKS_URL", default="")
# Zendesk's signed-URL JWT: RS256 with the app's public key, from these accounts' installations.
ZENDESK_APP_PUBLIC_KEY = env.str("ZENDESK_APP_PUBLIC_KEY", default="")
ZENDESK_SUBDOMAINS = env.list("ZENDESK_SUBDOMAINS", default=[])
ZENDESK_APP_AUD = env.list("ZENDESK_APP_AUD", default=[])
# First sight of an unlinked CRM agent: create the user only when on, for these email domains.
CRM_AGENT_AUTO_PROVISION = env.bool("CRM_AGENT_AUTO_PROVISION", default=False)
CRM_AGENT_EMAIL_DOMAINS = env.list("CRM_AGENT_EMAIL_DOMAINS", default=[])
CRM_ACCESS_TOKEN_TTL = env_duration("CRM_ACCESS_TOKEN_TTL", "15min")

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: the 401 answer's WWW-Authenticate names the first class.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        # Short-lived access tokens from POST /api/v1/auth/crm-token/ (crm_plugin/crm/tokens.py).
        "crm_plugin.crm.tokens.CrmBearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["crm_plugin.api.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "crm_plugin.api.openapi.ApiAutoSchema",
    "EXCEPTION_HANDLER": "crm_plugin.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Throttles are keyed on the authenticated user (never on a header the caller writes); a view
    # opts in with `throttle_scope`. They cap agent tools, they are not the 2SV lock; with the
    # cache down they let requests through (logged and counted), they don't fail them.
    "DEFAULT_THROTTLE_CLASSES": ["crm_plugin.api.throttling.FailOpenScopedRateThrottle"],
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "DEFAULT_THROTTLE_RATES": {
        "agent_read": env.str("TWOSV_THROTTLE_AGENT_READ", default="600/min"),
        "lookup_request": env.str("TWOSV_THROTTLE_LOOKUP", default="60/min"),
        "verify_phone": env.str("TWOSV_THROTTLE_VERIFY_PHONE", default="30/min"),
        "session_start": env.str("TWOSV_THROTTLE_SESSION_START", default="30/min"),
        "producer": env.str("TWOSV_THROTTLE_PRODUCER", default="6000/min"),
        # Assertion exchanges: anonymous (the assertion is the credential), counted per address.
        "crm_token": env.str("TWOSV_THROTTLE_CRM_TOKEN", default="60/min"),
        # Twilio's status callbacks: anonymous (signed), so counted per source address.
        "twilio_webhook": env.str("TWOSV_THROTTLE_TWILIO_WEBHOOK", default="6000/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "twosv-panel API",
    "DESCRIPTION": "Two-step verification state and next steps for the CRM sidebar.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Served from our own static files: the docs page works without any CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Response objects list every field they may carry: an extra field is a schema violation.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "crm_plugin.api.openapi.close_response_objects",
    ],
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default="CELERY_BROKER_URL" not in env
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Redis redelivers a message not acknowledged within the visibility timeout; every countdown
# and retry wait must stay below it or the task runs again in a loop (tests check this).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_connect_timeout": 1,
    "socket_timeout": 1,
    "max_retries": 0,
}
# A publish must not hang when the broker is down: the lookup row is the outbox and the
# sweeper re-enqueues it later.
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = False
# Workers log like the web process: Django's LOGGING (JSON lines, numbers masked), not Celery's.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A try that hangs is stopped: softly first (the lookup records a transient failure), then
# for good. The ATS client's own deadline per try (ATS_TRY_DEADLINE) stays below both.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=45)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60)
TWOSV_LOOKUP_SWEEP_INTERVAL = env_duration("TWOSV_LOOKUP_SWEEP_INTERVAL", "30s")
# Eager mode has no beat: the dev server runs the schedule itself (twosv/scheduler.py).
TWOSV_EMBEDDED_BEAT = env.bool("TWOSV_EMBEDDED_BEAT", default=CELERY_TASK_ALWAYS_EAGER)
# Delivery incidents (docs/SPEC.md §11, twosv/services/incidents.py): per phone region, the
# failed share in the last WINDOW against the region's share over the BASELINE before it.
TWOSV_INCIDENT_DETECT_INTERVAL = env_duration("TWOSV_INCIDENT_DETECT_INTERVAL", "1min")
TWOSV_INCIDENT_WINDOW = env_duration("TWOSV_INCIDENT_WINDOW", "15min")
TWOSV_INCIDENT_BASELINE = env_duration("TWOSV_INCIDENT_BASELINE", "7d")
TWOSV_INCIDENT_MIN_FAILURES = env.int("TWOSV_INCIDENT_MIN_FAILURES", default=20)
TWOSV_INCIDENT_MIN_SHARE = env.float("TWOSV_INCIDENT_MIN_SHARE", default=0.30)
TWOSV_INCIDENT_BASELINE_FACTOR = env.float("TWOSV_INCIDENT_BASELINE_FACTOR", default=3.0)
TWOSV_INCIDENT_RESOLVE_AFTER = env_duration("TWOSV_INCIDENT_RESOLVE_AFTER", "30min")
TWOSV_INCIDENT_QUIET_PERIOD = env_duration("TWOSV_INCIDENT_QUIET_PERIOD", "6h")
# Twilio messages still open this long after their first receipt are asked about (the final
# status callback may be lost); a lookup doesn't trust receipts with such a message unasked.
TWILIO_RECONCILE_AFTER = env_duration("TWILIO_RECONCILE_AFTER", "5min")
CELERY_BEAT_SCHEDULE = {
    "delivery-lookup-sweep": {
        "task": "twosv.tasks.delivery_lookup_sweep",
        "schedule": TWOSV_LOOKUP_SWEEP_INTERVAL.total_seconds(),
    },
    "twilio-receipts-reconcile": {
        "task": "twosv.tasks.twilio_receipts_reconcile",
        "schedule": env_duration("TWILIO_RECONCILE_INTERVAL", "1min").total_seconds(),
    },
    "delivery-incidents-detect": {
        "task": "twosv.tasks.delivery_incidents_detect",
        "schedule": TWOSV_INCIDENT_DETECT_INTERVAL.total_seconds(),
    },
    # Retention (twosv/services/retention.py): each run purges in batches within a time budget
    # below the task's soft time limit; what is left is taken up by the next run.
    "retention-purge": {
        "task": "twosv.tasks.retention_purge",
        "schedule": env_duration("TWOSV_PURGE_INTERVAL", "1h").total_seconds(),
    },
}

# --- Domain: lock policy, lookups, ATS ----------------------------------------------------------
TWOSV_RESEND_LOCK_THRESHOLD = env.int("TWOSV_RESEND_LOCK_THRESHOLD", default=200)
TWOSV_LOCK_DURATION = env_duration("TWOSV_LOCK_DURATION", "24h")
TWOSV_RESEND_WINDOW = env_duration("TWOSV_RESEND_WINDOW", "24h")
# A checkpoint of a method's projection every N events folded: a late event re-folds at most N
# plus the events after it (docs/performance.md, "Checkpoints").
TWOSV_CHECKPOINT_EVERY = env.int("TWOSV_CHECKPOINT_EVERY", default=250)
# Events older than this are purged (after a checkpoint keeps their effect) and refused when
# they arrive (409 event_too_old); audit entries after theirs. SPEC §8, "Retention".
TWOSV_EVENT_RETENTION = env_duration("TWOSV_EVENT_RETENTION", "400d")
TWOSV_AUDIT_RETENTION = env_duration("TWOSV_AUDIT_RETENTION", "400d")
TWOSV_LOOKUP_PERIOD = env_duration("TWOSV_LOOKUP_PERIOD", "24h")
TWOSV_LOOKUP_FRESHNESS = env_duration("TWOSV_LOOKUP_FRESHNESS", "10min")
TWOSV_LOOKUP_MAX_TRIES = env.int("TWOSV_LOOKUP_MAX_TRIES", default=5)
TWOSV_LOOKUP_STALE_AFTER = env_duration("TWOSV_LOOKUP_STALE_AFTER", "2min")
# A try running longer than this has lost its worker (killed, OOM, host gone): the hard time
# limit ends every live try sooner, so the sweeper may hand it to another worker.
TWOSV_LOOKUP_RUNNING_STALE_AFTER = env_duration("TWOSV_LOOKUP_RUNNING_STALE_AFTER", "90s")
TWOSV_PHONE_VERIFY_MAX_TRIES = env.int("TWOSV_PHONE_VERIFY_MAX_TRIES", default=5)
# Across all sessions and agents, counted in the database: new sessions don't reset it.
TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER = env.int("TWOSV_PHONE_VERIFY_MAX_PER_CUSTOMER", default=10)
TWOSV_PHONE_VERIFY_CUSTOMER_WINDOW = env_duration("TWOSV_PHONE_VERIFY_CUSTOMER_WINDOW", "24h")
TWOSV_ATS_BACKEND = env.str("TWOSV_ATS_BACKEND", default="local")
TWOSV_CANCEL_2SV_URL = env.str(
    "TWOSV_CANCEL_2SV_URL", default="https://help.example.com/cancel-two-step-verification"
)
ATS_BASE_URL = env.str("ATS_BASE_URL", default="")
ATS_TOKEN = env.str("ATS_TOKEN", default="")
ATS_CONNECT_TIMEOUT = env.float("ATS_CONNECT_TIMEOUT", default=2.0)
ATS_READ_TIMEOUT = env.float("ATS_READ_TIMEOUT", default=5.0)
# The whole try, every page included: per-read timeouts alone let a server that trickles a byte
# at a time hold a try for ever.
ATS_TRY_DEADLINE = env_duration("ATS_TRY_DEADLINE", "20s")

# Twilio (TWOSV_ATS_BACKEND=twilio, docs/SPEC.md §10). TWILIO_API_BASE_URL overrides the API's
# address (tests point it at a local fake); TWILIO_STATUS_CALLBACK_URL is the public URL Twilio
# calls with status callbacks, exactly as configured there: signatures are computed over it.
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")
TWILIO_STATUS_CALLBACK_URL = env.str("TWILIO_STATUS_CALLBACK_URL", default="")
# Lookups answer from receipts when they cover the period (twosv/services/receipts.py).
TWILIO_RECEIPTS_ANSWER_LOOKUPS = env.bool("TWILIO_RECEIPTS_ANSWER_LOOKUPS", default=True)

if TWOSV_ATS_BACKEND not in ("local", "http", "twilio"):
    raise ImproperlyConfigured("TWOSV_ATS_BACKEND must be 'local', 'http' or 'twilio'.")
if TWOSV_ATS_BACKEND == "http" and not (ATS_BASE_URL and ATS_TOKEN):
    raise ImproperlyConfigured("TWOSV_ATS_BACKEND=http needs ATS_BASE_URL and ATS_TOKEN.")
if TWOSV_ATS_BACKEND == "twilio" and not (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN):
    raise ImproperlyConfigured(
        "TWOSV_ATS_BACKEND=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN."
    )

# --- Logging: one JSON line per record; phone numbers masked by a filter as a safety net -------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_phones": {"()": "crm_plugin.logging.MaskPhoneNumbersFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["mask_phones"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The request log below replaces Django's own per-request lines.
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
        # httpx logs every request's URL at INFO, and the ATS URL carries the phone number.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # The twilio library logs every request's query (the recipient's number) at INFO.
        "twilio": {"level": "WARNING"},
    },
}
