"""Settings for the payment service, read from the environment in this one place.

Every variable is documented in README.md ("Configuration"). Defaults are the safe
production ones: DEBUG off, and no built-in secret key unless DEBUG is on.
"""

import datetime
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from payment_project.logconfig import JSON_FORMATTER, NOT_READINESS_FILTER, STDOUT_HANDLER, TRACE_FILTER

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def _env_float(name: str, default: float) -> float:
    raw = env.str(name, default=str(default))
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


# --- Core -------------------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _secret_key() -> str:
    if key := env.str("DJANGO_SECRET_KEY", default=""):
        return key
    if key_file := env.str("DJANGO_SECRET_KEY_FILE", default=""):
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"DJANGO_SECRET_KEY_FILE={key_file} cannot be read ({exc.strerror}); "
                "the entrypoint creates it on first start"
            ) from None
        if key:
            return key
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY_FILE={key_file} is empty")
    if DEBUG:
        return "django-insecure-local-development-only"
    raise ImproperlyConfigured(
        "Set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE (there is no built-in secret key "
        "outside DJANGO_DEBUG=true)"
    )


SECRET_KEY = _secret_key()

# Django's syntax: ".payment.svc.cluster.local" allows that name and all its subdomains.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "health_check",
    "axes",
    "payment_app",
]

MIDDLEWARE = [
    # Counts and times every answer (payment_app.metrics), so it comes first.
    "payment_app.middleware.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, CSRF, auth and messages middleware, skipped on the charge API
    # (/api/v1/), which is unauthenticated and CSRF-exempt; the admin gets them as before.
    "payment_app.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "payment_app.middleware.CsrfViewMiddleware",
    "payment_app.middleware.AuthenticationMiddleware",
    "payment_app.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a locked-out admin login into the lockout answer (AXES_LOCKOUT_CALLABLE); last,
    # as django-axes asks. On the charge API it only reads one request attribute.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "payment_project.urls"
WSGI_APPLICATION = "payment_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database ----------------------------------------------------------------------------
# DATABASE_URL or DATABASE_URL_FILE (PostgreSQL) for deployments with several replicas;
# without either, SQLite at DATABASE_PATH, the embedded default.
#
# SQLite is tuned for several gunicorn workers writing at once: WAL lets readers run
# beside the single writer; IMMEDIATE takes the write lock when a transaction starts, so
# two writers queue on the busy timeout instead of failing with "database is locked" when
# one upgrades a read lock; synchronous=FULL fsyncs the WAL at every commit, so an
# acknowledged charge survives a power loss, not only a process crash.

DATABASE_PATH = Path(env.str("DATABASE_PATH", default=str(BASE_DIR / "var" / "payment.sqlite3")))
SQLITE_BUSY_TIMEOUT_SECONDS = _env_float("SQLITE_BUSY_TIMEOUT_SECONDS", 10.0)
DATABASE_CONNECT_TIMEOUT = env.int("DATABASE_CONNECT_TIMEOUT", default=5)
DATABASE_STATEMENT_TIMEOUT_MS = env.int("DATABASE_STATEMENT_TIMEOUT_MS", default=5000)


def _postgresql(url: str) -> dict:
    # The URL holds the password: no error below may quote it.
    try:
        config = environ.Env.db_url_config(url)
    except Exception:
        raise ImproperlyConfigured("DATABASE_URL cannot be parsed as a database URL") from None
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_URL must be a PostgreSQL URL (postgres:// or postgresql://); "
            "unset it to use SQLite at DATABASE_PATH"
        )
    options = config.setdefault("OPTIONS", {})
    # Options given in the URL (?sslmode=..., ?connect_timeout=...) win over these defaults.
    # A dead server or a half-open connection must fail a charge in seconds (a JSON 503),
    # not hold a worker: connect timeout, statement timeout, and TCP keepalives.
    options.setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT)
    options.setdefault("options", f"-c statement_timeout={DATABASE_STATEMENT_TIMEOUT_MS}")
    options.setdefault("keepalives", 1)
    options.setdefault("keepalives_idle", 10)
    options.setdefault("keepalives_interval", 5)
    options.setdefault("keepalives_count", 3)
    options.setdefault("application_name", "payment")
    # One connection per worker thread, kept between requests and checked before reuse,
    # so a restarted server costs one failed check, not one failed charge.
    config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
    config["CONN_HEALTH_CHECKS"] = True
    return config


def _sqlite() -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATABASE_PATH,
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=FULL",
        },
        # One connection per worker thread, kept between requests: opening one costs the
        # PRAGMAs above on every request otherwise.
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": True,
    }


def _database_url() -> str:
    """DATABASE_URL, or the content of the file DATABASE_URL_FILE names (the cluster mounts
    the database's Secret there, so the password is in no process environment:
    `ps eww` and /proc/*/environ show the file's path only). django-environ's
    FileAwareEnv reads the file; the file wins when both are set."""
    try:
        return environ.FileAwareEnv().str("DATABASE_URL", default="").strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"DATABASE_URL_FILE={env.str('DATABASE_URL_FILE')} cannot be read ({exc.strerror})"
        ) from None


DATABASE_URL = _database_url()
DATABASES = {"default": _postgresql(DATABASE_URL) if DATABASE_URL else _sqlite()}
del DATABASE_URL  # keep the password out of the settings object (and so out of debug pages)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- The payment simulation -------------------------------------------------------------

PAYMENT_SUCCESS_RATE = _env_float("PAYMENT_SUCCESS_RATE", 0.5)
if not 0.0 <= PAYMENT_SUCCESS_RATE <= 1.0:
    raise ImproperlyConfigured(
        f"PAYMENT_SUCCESS_RATE must be between 0 and 1, got {PAYMENT_SUCCESS_RATE}"
    )
_seed = env.str("PAYMENT_RANDOM_SEED", default="")
try:
    PAYMENT_RANDOM_SEED = int(_seed) if _seed else None
except ValueError:
    raise ImproperlyConfigured(f"PAYMENT_RANDOM_SEED must be an integer, got {_seed!r}") from None

# Largest body the charge endpoint reads; a stock Antaeus body is under 60 bytes.
PAYMENT_MAX_BODY_BYTES = env.int("PAYMENT_MAX_BODY_BYTES", default=4096)
# Longest the charge endpoint waits for the whole body once the headers are in (gunicorn
# has no such limit): a client that stalls or trickles gets a JSON 408 and its worker
# thread back. Antaeus sends headers and body together. Keep it under the graceful timeout.
PAYMENT_BODY_READ_TIMEOUT_SECONDS = _env_float("PAYMENT_BODY_READ_TIMEOUT_SECONDS", 5.0)
if PAYMENT_BODY_READ_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured(
        f"PAYMENT_BODY_READ_TIMEOUT_SECONDS must be positive, got {PAYMENT_BODY_READ_TIMEOUT_SECONDS}"
    )
# Everything else (the admin's forms) gets Django's check with a modest bound.
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

# --- Auth, i18n, static files -----------------------------------------------------------

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
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Admin login: failures logged, lockout (django-axes) ---------------------------------
# Every failed admin login is recorded in the database (so all pods share the count) and
# logged (WARNING "AXES: ... login failure by {username, ip_address, ...}", never the
# password). After ADMIN_LOGIN_FAILURE_LIMIT failures the login is refused without
# checking any password until ADMIN_LOGIN_LOCKOUT_MINUTES pass: a password check holds
# a gunicorn worker's CPU for a long time (docs/deploy.md gives the figure), time charges
# would otherwise queue behind, so a flood gets a few checks per lockout period and then
# only cheap refusals. Refusals during the lockout are not recorded (each would write to the
# database, and extend the lockout for ever while a flood lasts).
# Locked by address or by user name, whichever reaches the limit: in the pod every
# client reaches gunicorn from nginx on loopback, so the address count is the total for
# the service; the name count holds where clients' own addresses are seen.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=_env_float("ADMIN_LOGIN_LOCKOUT_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "payment_app.errors.login_locked_out"
# The log names the user name tried (an operator tells a typo from an attack by it); the
# password field is never logged or stored.
AXES_SENSITIVE_PARAMETERS = []
if AXES_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured(f"ADMIN_LOGIN_FAILURE_LIMIT must be at least 1, got {AXES_FAILURE_LIMIT}")

# --- Admin sessions and cookies; `manage.py check --deploy` -----------------------------
# Operators reach the admin through `kubectl port-forward` on http://localhost, which
# browsers treat as a secure context (they keep and send Secure cookies there), and
# anywhere else only over HTTPS; so the cookies are Secure unless DJANGO_SECURE_COOKIES=false
# (a browser that does not treat localhost so). Sessions last an hour, not two weeks.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the admin posts the token from its forms, never from script
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_COOKIE_AGE", default=3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# The deploy checks that do not apply, each for a reason (docs/deploy.md lists them):
SILENCED_SYSTEM_CHECKS = [
    # W003 looks for Django's CsrfViewMiddleware by name; MIDDLEWARE has
    # payment_app.middleware.CsrfViewMiddleware, a subclass that skips only the
    # cookie-less charge API. (This also hides W016; CSRF_COOKIE_SECURE is set above.)
    "security.W003",
    # W004 (HSTS) and W008 (redirect to HTTPS): the service speaks plain HTTP inside the
    # cluster. Antaeus calls it by http:// and follows no redirect, and HSTS is ignored on
    # an HTTP answer; TLS, where there is any, is the job of whatever sits in front.
    "security.W004",
    "security.W008",
]

# --- API --------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # The charge API is open to whoever the NetworkPolicy lets in (Antaeus sends no
    # credentials); no authentication also means no CSRF check on it.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PARSER_CLASSES": ["payment_app.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "payment_app.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Antaeus payment provider",
    "DESCRIPTION": "Charges invoices for Pleo's Antaeus with a configurable success rate.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Logging: JSON lines on stdout ------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": JSON_FORMATTER},
    "filters": {"trace": TRACE_FILTER, "not_readiness": NOT_READINESS_FILTER},
    "handlers": {"stdout": STDOUT_HANDLER},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Each refused request is answered as JSON and counted; a 4xx is not an error here.
        "django.request": {"level": "ERROR", "filters": ["not_readiness"]},
        # django-health-check logs each failed check with its traceback on every probe;
        # payment_app.health logs a change of readiness once instead. ERROR still shows
        # a check that crashed.
        "health_check": {"level": "ERROR"},
        # django-axes: each counted failure and each lockout at WARNING; its INFO lines
        # (start-up, "running database handler", clean-ups) are noise.
        "axes": {"level": "WARNING"},
        "django.security.DisallowedHost": {"level": "WARNING"},
    },
}

CSRF_FAILURE_VIEW = "payment_app.errors.csrf_failure"
