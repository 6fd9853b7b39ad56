"""Settings for the device portal, read from the environment.

Development (``PORTAL_DEBUG=1``) gets safe local defaults: SQLite, development keys kept under
``PORTAL_DATA_DIR``. Anything else must be configured explicitly and fails loudly when it is not,
because this portal holds device secrets.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default=False):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 1 or 0 (or true/false), not {raw!r}.")


def env_port(name, default):
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ImproperlyConfigured(f"{name} must be a port number from 1 to 65535, not {raw!r}.")
    return port


def env_int(name, default, minimum=0):
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw!r}.")
    return value


DEBUG = env_bool("PORTAL_DEBUG")
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR") or BASE_DIR / "data").resolve()


def _development_key(filename, make):
    """A key kept in the data folder so that development restarts keep sessions and secrets."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / filename
    if not path.exists():
        # Created 0600 (never readable by others, not even until a chmod); O_EXCL: two
        # processes starting at once keep the first one's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(make() + "\n")
    return path.read_text().strip()


def _make_django_key():
    import secrets

    return secrets.token_urlsafe(50)


def _make_fernet_key():
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


_MISSING_KEYS_HELP = (
    "{name} is not set. Outside development (PORTAL_DEBUG=1) the portal needs it. Make one with:\n"
    "  {command}\n"
    "and set it in the environment of every portal process (web, worker, broker)."
)

SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            _MISSING_KEYS_HELP.format(
                name="PORTAL_SECRET_KEY",
                command="python -c 'import secrets; print(secrets.token_urlsafe(50))'",
            )
        )
    SECRET_KEY = _development_key("dev-secret-key.txt", _make_django_key)

_secrets_keys_raw = os.environ.get("PORTAL_SECRETS_KEY", "")
if not _secrets_keys_raw.strip():
    if not DEBUG:
        raise ImproperlyConfigured(
            _MISSING_KEYS_HELP.format(
                name="PORTAL_SECRETS_KEY",
                command=(
                    "python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'"
                ),
            )
        )
    _secrets_keys_raw = _development_key("dev-secrets-key.txt", _make_fernet_key)

# Newest first: new secrets are encrypted with the first key; every key can decrypt.
SECRETS_KEYS = [k.strip() for k in _secrets_keys_raw.split(",") if k.strip()]


def _check_fernet_keys(keys):
    from cryptography.fernet import Fernet

    for index, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"PORTAL_SECRETS_KEY: key {index} is not a Fernet key (32 url-safe base64-encoded "
                "bytes). Make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None


_check_fernet_keys(SECRETS_KEYS)

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("PORTAL_ALLOWED_HOSTS", "").split(",") if h.strip()]
if DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("PORTAL_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_tasks",
    "django_tasks_db",
    "devices",
    "broker",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.DatabaseLockedMiddleware",  # a locked database: 503 + Retry-After
]

ROOT_URLCONF = "portal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "portal.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'portal.db'}",
        conn_max_age=int(os.environ.get("PORTAL_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server, worker and broker share one SQLite file: wait for locks instead of failing.
    # Connections are kept (PORTAL_DB_CONN_MAX_AGE, as on other databases): opening one costs a
    # file open and the WAL pragma on every request. Safe with gunicorn's threads (each thread has
    # its own connection) and with WAL (autocommit: a kept connection holds no read snapshot
    # between queries, so checkpoints are not held back).
    # synchronous=NORMAL (PORTAL_SQLITE_SYNCHRONOUS): with WAL the database stays consistent
    # whatever happens, and a crash of a process loses nothing; only a power cut or an OS crash
    # can roll back the last commits. It takes the fsync off every commit (0.26 ms → 0.01 ms
    # here), which is what a reconnect storm's session records queue behind. FULL: every commit
    # durable.
    _synchronous = os.environ.get("PORTAL_SQLITE_SYNCHRONOUS", "NORMAL").strip().upper()
    if _synchronous not in ("NORMAL", "FULL"):
        raise ImproperlyConfigured(
            f"PORTAL_SQLITE_SYNCHRONOUS must be NORMAL or FULL, not {_synchronous!r}."
        )
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE",
         "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={_synchronous};"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("PORTAL_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("PORTAL_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SESSION_COOKIE_HTTPONLY = True
    # Opt-in, because both are wrong when switched on blindly: HSTS pins browsers to https for
    # that long; the proxy header must only be trusted when a proxy always sets (or strips) it.
    SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 0)
    if env_bool("PORTAL_BEHIND_HTTPS_PROXY"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Background work through the Tasks API. The database backend is the embedded default;
# PORTAL_TASKS_REDIS_URL switches to django-tasks-rq (see README, "Scaling out").
_redis_url = os.environ.get("PORTAL_TASKS_REDIS_URL", "")
if _redis_url:
    RQ_QUEUES = {"default": {"URL": _redis_url}}
    INSTALLED_APPS.append("django_rq")
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
else:
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# The MQTT broker devices are told to use.
MQTT_HOST = os.environ.get("PORTAL_MQTT_HOST", "127.0.0.1")
MQTT_PORT = env_port("PORTAL_MQTT_PORT", 1883)
MQTT_TLS_PORT = env_port("PORTAL_MQTT_TLS_PORT", None)
# CA certificate a device needs for securemode=2; offered for download when the file exists.
MQTT_CA_FILE = os.environ.get("PORTAL_MQTT_CA_FILE") or str(DATA_DIR / "tls" / "ca.pem")
# Optional maximum clock skew for the timestamp extension parameter (spec §2); 0 = not judged.
MQTT_MAX_CLOCK_SKEW_MS = env_int("PORTAL_MQTT_MAX_CLOCK_SKEW_MS", 0)

BROKER_HOOK_TOKEN = os.environ.get("PORTAL_BROKER_HOOK_TOKEN", "")

# EMQX's REST API, with which the portal disconnects a device at once when it is disabled, its
# secret rotated or it is deleted (README, "EMQX 5"). Unset: no kicks are sent (the embedded
# broker disconnects such devices itself).
EMQX_API_URL = os.environ.get("PORTAL_EMQX_API_URL", "").strip().rstrip("/")
EMQX_API_KEY = os.environ.get("PORTAL_EMQX_API_KEY", "")
EMQX_API_SECRET = os.environ.get("PORTAL_EMQX_API_SECRET", "")
if EMQX_API_URL:
    if not EMQX_API_URL.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"PORTAL_EMQX_API_URL must start with http:// or https://, not {EMQX_API_URL!r}."
        )
    if not (EMQX_API_KEY and EMQX_API_SECRET):
        raise ImproperlyConfigured(
            "PORTAL_EMQX_API_URL is set: PORTAL_EMQX_API_KEY and PORTAL_EMQX_API_SECRET (an EMQX "
            "API key and its secret) must be set too."
        )
EMQX_API_TIMEOUT = env_int("PORTAL_EMQX_API_TIMEOUT", 5, minimum=1)

# Connection checks ("Test connection"): the bound on each step (connect, CONNACK, PUBACK), and
# how long finished checks are kept before `python manage.py prunechecks` deletes them.
CHECK_STEP_TIMEOUT = env_int("PORTAL_CHECK_TIMEOUT", 5, minimum=1)
CHECK_RETENTION_DAYS = env_int("PORTAL_CHECK_RETENTION_DAYS", 30, minimum=1)

# The connection log (devices.connection_log): on unless PORTAL_CONNECTION_LOG=0; events older
# than PORTAL_CONNECTION_LOG_DAYS go with `python manage.py prunechecks`. A process that records
# writes its buffer from a background thread (tests write it themselves with flush()).
CONNECTION_LOG = env_bool("PORTAL_CONNECTION_LOG", True)
CONNECTION_LOG_DAYS = env_int("PORTAL_CONNECTION_LOG_DAYS", 7, minimum=1)
CONNECTION_LOG_BACKGROUND = True

# Message trace and send to device (devices.message_trace): traces older than
# PORTAL_TRACE_RETENTION_DAYS go with `python manage.py prunechecks`. PORTAL_MESSAGE_TRACE=0
# switches the feature off in the embedded broker (the benchmark's baseline).
MESSAGE_TRACE = env_bool("PORTAL_MESSAGE_TRACE", True)
TRACE_RETENTION_DAYS = env_int("PORTAL_TRACE_RETENTION_DAYS", 1, minimum=1)
# Where EMQX's trace rule sends messages (its HTTP action): the portal's own base URL as EMQX
# reaches it, e.g. http://portal:8000 (the /mqtt/trace hook is under it).
EMQX_HOOK_BASE_URL = os.environ.get("PORTAL_EMQX_HOOK_BASE_URL", "").strip().rstrip("/")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {
        "amqtt": {"level": "WARNING"},
        "transitions": {"level": "WARNING"},
    },
}

# The embedded broker (python manage.py runbroker). Certificate and key of the TLS listener;
# in development `make run` creates them (and the CA in MQTT_CA_FILE) under DATA_DIR/tls/.
MQTT_TLS_CERTFILE = os.environ.get("PORTAL_MQTT_TLS_CERTFILE") or str(DATA_DIR / "tls" / "server.pem")
MQTT_TLS_KEYFILE = os.environ.get("PORTAL_MQTT_TLS_KEYFILE") or str(DATA_DIR / "tls" / "server-key.pem")
# How long the broker and the hooks may reuse a device's looked-up secret and enabled flag. The
# spec (§4) wants a disabled device or a rotated secret to take effect within 2 seconds.
MQTT_AUTH_CACHE_MS = env_int("PORTAL_MQTT_AUTH_CACHE_MS", 1000)
if MQTT_AUTH_CACHE_MS > 1500:
    raise ImproperlyConfigured(
        "PORTAL_MQTT_AUTH_CACHE_MS must be at most 1500: a disabled device or a rotated secret "
        f"must take effect within 2 seconds, not {MQTT_AUTH_CACHE_MS}."
    )

# --- Login lock-out and password reset (issue 9) -------------------------------------------------
# django-axes counts failed logins in the database (so every gunicorn worker sees them). After
# PORTAL_LOGIN_FAILURE_LIMIT failures from one address, or against one account, within the cool-off
# period, that address or account is refused, even with the right password, until
# PORTAL_LOGIN_COOLOFF_MINUTES have passed since its last failure. Failed API tokens count against
# their address in the same table. Unlocking: see README, "Security".
INSTALLED_APPS += ["axes", "accounts"]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]  # last, as django-axes asks
AUTHENTICATION_BACKENDS = [
    "devices.throttle.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURE_LIMIT = env_int("PORTAL_LOGIN_FAILURE_LIMIT", 10, minimum=1)
if LOGIN_FAILURE_LIMIT > 10:
    raise ImproperlyConfigured(
        f"PORTAL_LOGIN_FAILURE_LIMIT must be from 1 to 10, not {LOGIN_FAILURE_LIMIT}."
    )
LOGIN_COOLOFF_MINUTES = env_int("PORTAL_LOGIN_COOLOFF_MINUTES", 15, minimum=1)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
# By address and by account (either locks); a token failure has no account, only an address.
AXES_LOCKOUT_PARAMETERS = "devices.throttle.lockout_parameters"
AXES_LOCKOUT_CALLABLE = "devices.throttle.lockout_response"
# Tries during a lock-out are refused without being counted, so the retry time a page gives holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
AXES_VERBOSE = False  # no start-up banner; failures are still logged, username and address masked
# The client address is REMOTE_ADDR. Behind a reverse proxy, PORTAL_TRUSTED_PROXY_COUNT = how many
# proxies append to X-Forwarded-For (the address that many entries from the right is the client's).
TRUSTED_PROXY_COUNT = env_int("PORTAL_TRUSTED_PROXY_COUNT", 0)
AXES_CLIENT_IP_CALLABLE = "devices.throttle.client_address"

# Password reset by mail is offered only when mail is configured: PORTAL_EMAIL_HOST (SMTP server)
# and PORTAL_EMAIL_FROM. Without them the reset URLs answer 404 and the login page has no link.
EMAIL_HOST = os.environ.get("PORTAL_EMAIL_HOST", "").strip()
PASSWORD_RESET_ENABLED = bool(EMAIL_HOST)
if PASSWORD_RESET_ENABLED:
    EMAIL_PORT = env_port("PORTAL_EMAIL_PORT", 587)
    EMAIL_HOST_USER = os.environ.get("PORTAL_EMAIL_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("PORTAL_EMAIL_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("PORTAL_EMAIL_USE_TLS", EMAIL_PORT == 587)
    EMAIL_USE_SSL = env_bool("PORTAL_EMAIL_USE_SSL", EMAIL_PORT == 465)
    if EMAIL_USE_TLS and EMAIL_USE_SSL:
        raise ImproperlyConfigured("PORTAL_EMAIL_USE_TLS and PORTAL_EMAIL_USE_SSL: set only one.")
    EMAIL_TIMEOUT = 10
    DEFAULT_FROM_EMAIL = os.environ.get("PORTAL_EMAIL_FROM", "").strip()
    if "@" not in DEFAULT_FROM_EMAIL:
        raise ImproperlyConfigured(
            "PORTAL_EMAIL_HOST is set, so PORTAL_EMAIL_FROM must be the sender address "
            f"(e.g. portal@example.com), not {DEFAULT_FROM_EMAIL!r}."
        )
    SERVER_EMAIL = DEFAULT_FROM_EMAIL
# At most this many reset mails per hour to one address, and reset requests per hour from one
# client address.
PASSWORD_RESET_PER_HOUR = env_int("PORTAL_PASSWORD_RESET_PER_HOUR", 3, minimum=1)
# --- end of login lock-out and password reset ----------------------------------------------------
