"""Security review: each test is a problem that was found (and fixed), proved through HTTP."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devices.models import AuditEvent, Device

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def test_admin_rotate_needs_the_secret_permission_as_in_the_console(
    client, staff_without_secrets, device
):
    """README: rotating needs devices.view_device_secret and devices.change_device. The console
    asked for both; the admin's rotate view asked only for the change permission."""
    client.force_login(staff_without_secrets)
    url = f"/admin/devices/device/{device.pk}/rotate-secret/"
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    device.refresh_from_db()
    assert device.device_secret == "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.ROTATE_SECRET).exists()
    # ... and the change form does not offer the button it would refuse.
    page = client.get(f"/admin/devices/device/{device.pk}/change/")
    assert page.status_code == 200
    assert url.encode() not in page.content


def test_admin_rotate_still_works_with_both_permissions(owner_client, device):
    url = f"/admin/devices/device/{device.pk}/rotate-secret/"
    assert url.encode() in owner_client.get(f"/admin/devices/device/{device.pk}/change/").content
    assert owner_client.post(url).status_code == 302
    assert Device.objects.get(pk=device.pk).device_secret != "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"


def test_deeply_nested_check_body_is_a_400_not_a_500(owner_client, device):
    """json.loads raises RecursionError (not ValueError) on deep nesting: that was a 500."""
    response = owner_client.post(
        f"/api/v1/products/{device.product.product_id}/devices/{device.device_id}/checks",
        "[" * 100_000,
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_option"
    assert "JSON object" in response.json()["error"]["message"]


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
def test_development_keys_are_never_readable_by_others(tmp_path):
    """The development keys are created 0600 from the start: written first and chmod-ed after,
    they were readable by everyone (umask 022) until the chmod, and stayed so when it failed."""
    data = tmp_path / "data"
    script = (
        "import os, pathlib\n"
        "os.umask(0o022)\n"
        # Shows the file's mode as created: a later chmod is what this test must not rely on.
        "pathlib.Path.chmod = lambda self, mode, **kw: None\n"
        "import portal.settings\n"
    )
    env = {
        **os.environ,
        "PORTAL_DEBUG": "1",
        "PORTAL_DATA_DIR": str(data),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    env.pop("PORTAL_SECRET_KEY", None)
    env.pop("PORTAL_SECRETS_KEY", None)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)
    for name in ("dev-secret-key.txt", "dev-secrets-key.txt"):
        mode = stat.S_IMODE((data / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
        assert (data / name).read_text().strip()


def _production_settings(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DATABASE_URL"))}
    clean.update(
        PORTAL_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_SECRET_KEY="x" * 50, PORTAL_SECRETS_KEY="eBZPVP7ZnR1VCEs5LzF8vNg1lYzCXUbx8dP8r0xK0Hc=",
        **env,
    )
    code = (
        "from django.conf import settings as s; import django; django.setup()\n"
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS,"
        " s.SECURE_PROXY_SSL_HEADER, s.X_FRAME_OPTIONS)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean,
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout.strip() + result.stderr


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
def test_production_defaults_secure_cookies_no_framing_and_no_hsts_unless_asked(tmp_path):
    code, output = _production_settings(tmp_path)
    assert code == 0, output
    assert output == "True True 0 None DENY"


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
def test_hsts_and_the_https_proxy_header_are_opt_in(tmp_path):
    code, output = _production_settings(
        tmp_path, PORTAL_HSTS_SECONDS="31536000", PORTAL_BEHIND_HTTPS_PROXY="1"
    )
    assert code == 0, output
    assert output == "True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https') DENY"
    code, output = _production_settings(tmp_path, PORTAL_HSTS_SECONDS="a year")
    assert code != 0
    assert "PORTAL_HSTS_SECONDS must be a whole number" in output
