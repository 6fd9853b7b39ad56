"""Settings come from the environment and fail loudly outside development."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD_FERNET = "eBZPVP7ZnR1VCEs5LzF8vNg1lYzCXUbx8dP8r0xK0Hc="

pytestmark = pytest.mark.broker  # each test starts a fresh interpreter: out of the quick lane


def load_settings(tmp_path, **env):
    """Import portal.settings in a fresh interpreter; (exit code, output)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DATABASE_URL"))}
    clean.update({"PORTAL_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "portal.settings"})
    clean.update(env)
    code = "import django; django.setup(); from django.conf import settings; print('DB', settings.DATABASES['default']['ENGINE'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout + result.stderr


def test_outside_development_it_refuses_to_start_without_a_secret_key(tmp_path):
    code, output = load_settings(tmp_path, PORTAL_SECRETS_KEY=GOOD_FERNET)
    assert code != 0
    assert "PORTAL_SECRET_KEY is not set" in output
    assert "secrets.token_urlsafe" in output  # says how to make one


def test_outside_development_it_refuses_to_start_without_a_secrets_key(tmp_path):
    code, output = load_settings(tmp_path, PORTAL_SECRET_KEY="x" * 50)
    assert code != 0
    assert "PORTAL_SECRETS_KEY is not set" in output
    assert "Fernet.generate_key()" in output


def test_a_malformed_secrets_key_is_named(tmp_path):
    code, output = load_settings(
        tmp_path, PORTAL_SECRET_KEY="x" * 50, PORTAL_SECRETS_KEY=f"{GOOD_FERNET},not-a-key"
    )
    assert code != 0
    assert "key 2 is not a Fernet key" in output


def test_with_both_keys_it_starts_on_sqlite_in_the_data_folder(tmp_path):
    code, output = load_settings(tmp_path, PORTAL_SECRET_KEY="x" * 50, PORTAL_SECRETS_KEY=GOOD_FERNET)
    assert code == 0, output
    assert "DB django.db.backends.sqlite3" in output


def test_development_makes_and_keeps_its_own_keys(tmp_path):
    code, output = load_settings(tmp_path, PORTAL_DEBUG="1")
    assert code == 0, output
    first = (tmp_path / "dev-secrets-key.txt").read_text()
    load_settings(tmp_path, PORTAL_DEBUG="1")
    assert (tmp_path / "dev-secrets-key.txt").read_text() == first


def test_database_url_takes_postgresql(tmp_path):
    code, output = load_settings(
        tmp_path,
        PORTAL_SECRET_KEY="x" * 50,
        PORTAL_SECRETS_KEY=GOOD_FERNET,
        DATABASE_URL="postgres://portal:pw@127.0.0.1:5432/portal",
    )
    assert code == 0, output
    assert "DB django.db.backends.postgresql" in output


@pytest.mark.parametrize("name, value", [("PORTAL_MQTT_PORT", "70000"), ("PORTAL_MQTT_TLS_PORT", "tls")])
def test_a_bad_port_is_named(tmp_path, name, value):
    code, output = load_settings(tmp_path, PORTAL_DEBUG="1", **{name: value})
    assert code != 0
    assert name in output and "port number" in output
