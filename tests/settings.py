"""Test settings: the real settings, with fixed test keys and a fast password hasher."""

import os
import tempfile

os.environ.setdefault("PORTAL_DATA_DIR", tempfile.mkdtemp(prefix="portal-test-"))
os.environ.setdefault("PORTAL_SECRET_KEY", "test-secret-key-not-for-production")
# Two keys, newest first, so that every test runs with key rotation in place.
os.environ.setdefault(
    "PORTAL_SECRETS_KEY",
    "eBZPVP7ZnR1VCEs5LzF8vNg1lYzCXUbx8dP8r0xK0Hc=,4-dR6nIZnHgBw5aMZPzQ8VY7mSWS4n2xUuUWhZ0xCkA=",
)
os.environ.setdefault("PORTAL_SECURE_COOKIES", "0")

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# Tests run tasks at once; a db_worker subprocess started by a test sets
# PORTAL_TEST_TASKS_BACKEND=db (and so does the test process for end-to-end tests).
if os.environ.get("PORTAL_TEST_TASKS_BACKEND") == "db":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
elif os.environ.get("PORTAL_TEST_TASKS_BACKEND") == "rq":
    pass  # the scale-out path as portal.settings sets it up from PORTAL_TASKS_REDIS_URL
else:
    TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}

STATIC_ROOT = DATA_DIR / "staticfiles"  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# A file database, so that a broker or worker started in a subprocess by a test sees the test data.
DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}  # noqa: F405

# Tests render templates without `collectstatic`; production keeps the manifest storage.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Tests that hold a real SQLite write lock lower how long a process waits for it (the portal
# waits 20 s), in the test process and in the subprocesses they start.
if os.environ.get("PORTAL_TEST_SQLITE_TIMEOUT") and "timeout" in DATABASES["default"].get("OPTIONS", {}):  # noqa: F405
    DATABASES["default"]["OPTIONS"]["timeout"] = float(os.environ["PORTAL_TEST_SQLITE_TIMEOUT"])  # noqa: F405
# The connection log's buffer is written by the test (connection_log.flush()), inside its
# transaction; a broker started by a test runs its own flush thread (PortalBroker.start).
CONNECTION_LOG_BACKGROUND = False
