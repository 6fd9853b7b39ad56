"""The management commands createapitoken and rotatekeys."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection

from devices.models import ApiToken, Device

ROOT = Path(__file__).resolve().parent.parent
NEW_KEY, OLD_KEY = django_settings.SECRETS_KEYS[0], django_settings.SECRETS_KEYS[1]


def raw_secrets():
    with connection.cursor() as cursor:
        cursor.execute("SELECT device_id, device_secret FROM devices_device ORDER BY id")
        return dict(cursor.fetchall())


def decrypt_with(key, stored):
    return Fernet(key).decrypt(stored.removeprefix("fernet:").encode()).decode()


# -- createapitoken --------------------------------------------------------------------------------


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
@pytest.mark.django_db(transaction=True)
def test_createapitoken_prints_the_token_alone_on_the_last_line_and_it_works(owner, device, client):
    """Run as a script would (a real process, `tail -n 1`), then use the token on the API."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "createapitoken", "alice", "--name", "factory line 3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    token = lines[-1]
    assert token == token.strip() and " " not in token
    assert token.startswith("dpt_")
    assert len(lines) > 1  # an explanation comes before it, never after
    record = ApiToken.objects.get()
    assert record.name == "factory line 3"
    assert record.token_hash == ApiToken.hash_token(token)

    response = client.get(
        "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params?securemode=3",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200
    assert response.json()["mqttUsername"] == "sensor-001&a1B2c3D4e5F"


@pytest.mark.django_db
def test_createapitoken_names_an_unknown_user():
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        call_command("createapitoken", "nobody", stdout=io.StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_createapitoken_warns_when_the_user_cannot_see_secrets(member):
    out = io.StringIO()
    call_command("createapitoken", "bob", stdout=out)
    lines = out.getvalue().rstrip("\n").split("\n")
    assert "lacks devices.view_device_secret" in out.getvalue()
    assert ApiToken.authenticate(lines[-1]) == member


# -- rotatekeys ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rotatekeys_reencrypts_every_secret_under_the_newest_key(settings, product):
    settings.SECRETS_KEYS = [OLD_KEY]
    plaintexts = {}
    for n in range(5):
        device = Device.objects.create(product=product, device_id=f"old-{n}")
        plaintexts[device.device_id] = device.device_secret
    assert all(decrypt_with(OLD_KEY, raw) for raw in raw_secrets().values())

    settings.SECRETS_KEYS = [NEW_KEY, OLD_KEY]
    out = io.StringIO()
    call_command("rotatekeys", "--chunk-size", "2", stdout=out)
    assert "Re-encrypted 5 device secrets" in out.getvalue()

    for device_id, raw in raw_secrets().items():
        assert decrypt_with(NEW_KEY, raw) == plaintexts[device_id]
        with pytest.raises(InvalidToken):
            decrypt_with(OLD_KEY, raw)

    settings.SECRETS_KEYS = [NEW_KEY]  # the old key can now be removed
    assert {d.device_id: d.device_secret for d in Device.objects.all()} == plaintexts


@pytest.mark.django_db
def test_rotatekeys_refuses_clearly_when_a_key_is_missing(settings, product):
    settings.SECRETS_KEYS = [OLD_KEY]
    Device.objects.create(product=product, device_id="orphan")
    before = raw_secrets()
    settings.SECRETS_KEYS = [NEW_KEY]
    with pytest.raises(CommandError, match="no key in PORTAL_SECRETS_KEY decrypts"):
        call_command("rotatekeys", stdout=io.StringIO())
    assert raw_secrets() == before


@pytest.mark.django_db
def test_rotatekeys_also_reencrypts_the_previous_secret_of_a_rotated_device(settings, product):
    # The connection log tells a device "you still sign with the previous secret"; removing the
    # old key after rotatekeys must not lose that secret.
    settings.SECRETS_KEYS = [OLD_KEY]
    device = Device.objects.create(product=product, device_id="rotated")
    first = device.device_secret
    device.rotate_secret()
    settings.SECRETS_KEYS = [NEW_KEY, OLD_KEY]
    out = io.StringIO()
    call_command("rotatekeys", stdout=out)
    assert "1 previous secret" in out.getvalue()
    settings.SECRETS_KEYS = [NEW_KEY]
    assert Device.objects.get(pk=device.pk).previous_secret == first


# -- manage.py's exit --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, exit_code", [(["manage.py", "version"], None),
                                              (["manage.py", "no-such-command"], 1)])
def test_manage_py_leaves_its_objects_out_of_the_exits_collections(monkeypatch, capsys, argv,
                                                                   exit_code):  # capsys: quiet
    """What a command made is frozen out of the collector before the interpreter exits (its
    final collections took 0.2 s after a fleet run), after a command that failed too."""
    import gc

    import manage

    monkeypatch.setattr(sys, "argv", argv)
    assert gc.get_freeze_count() == 0
    try:
        if exit_code is None:
            manage.main()
        else:
            with pytest.raises(SystemExit) as exited:
                manage.main()
            assert exited.value.code == exit_code
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert frozen > 0
