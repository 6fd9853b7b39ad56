"""The registry: identifier validation, secret generation, encryption at rest, key rotation."""

import string

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import override_settings
from django.utils import translation

from devices import fields, signing
from devices.models import AuditEvent, Device, Product
from devices.options import ConnectionOptions, OptionError


def raw_secret_column(device):
    with connection.cursor() as cursor:
        cursor.execute("SELECT device_secret FROM devices_device WHERE id = %s", [device.pk])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("bad", ["", "x" * 65, "has space", "a&b", "a|b", "中文", "a/b"])
def test_identifiers_outside_the_spec_are_refused_on_every_path(db, product, bad):
    with pytest.raises(ValidationError):
        Device(product=product, device_id=bad).full_clean()
    with pytest.raises(ValidationError):
        Device.objects.create(product=product, device_id=bad)
    with pytest.raises(ValidationError):
        Product.objects.create(product_id=bad, name="x")
    assert not Device.objects.filter(device_id=bad).exists()


@pytest.mark.parametrize("good", ["a", "x" * 64, "AA:BB:CC:DD:EE:FF", "gw.7@site", "prod_42-x"])
def test_identifiers_inside_the_spec_are_accepted(db, product, good):
    Device(product=product, device_id=good).full_clean()
    assert Device.objects.create(product=product, device_id=good).pk


def test_a_secret_is_generated_with_32_letters_and_digits(product):
    first = Device.objects.create(product=product, device_id="d1")
    second = Device.objects.create(product=product, device_id="d2")
    for secret in (first.device_secret, second.device_secret):
        assert len(secret) == 32
        assert set(secret) <= set(string.ascii_letters + string.digits)
    assert first.device_secret != second.device_secret


def test_a_given_secret_is_kept(device):
    assert Device.objects.get(pk=device.pk).device_secret == "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"


def test_the_database_column_never_holds_the_plaintext(device):
    raw = raw_secret_column(device)
    assert device.device_secret not in raw
    assert raw.startswith("fernet:")


def test_a_secret_encrypted_under_an_older_key_still_decrypts_and_rotates_to_the_newest(
    device, settings
):
    old_key = settings.SECRETS_KEYS[-1]
    new_key = Fernet.generate_key().decode()
    with override_settings(SECRETS_KEYS=[old_key]):
        Device.objects.filter(pk=device.pk).update(device_secret="rotate-me")
    raw_before = raw_secret_column(device)
    assert Fernet(old_key).decrypt(raw_before.removeprefix("fernet:").encode()) == b"rotate-me"
    with override_settings(SECRETS_KEYS=[new_key, old_key]):
        assert Device.objects.get(pk=device.pk).device_secret == "rotate-me"
        assert fields.decrypt_secret(fields.reencrypt_secret(raw_before)) == "rotate-me"
        rotated = fields.reencrypt_secret(raw_before)
    assert Fernet(new_key).decrypt(rotated.removeprefix("fernet:").encode()) == b"rotate-me"


def test_connection_params_follow_the_spec_rules(device, settings):
    settings.MQTT_TLS_PORT = None
    params = device.connection_params(
        ConnectionOptions(signmethod="hmacmd5", timestamp=1700000000000, client_id="sensor-001")
    )
    # The vector "hmacmd5 over TLS" differs only in securemode, which is not signed.
    assert params["mqttPassword"] == "58c5baa880bf50e122f5eef89653e878"
    assert params["mqttClientId"] == "sensor-001|securemode=3,signmethod=hmacmd5,timestamp=1700000000000|"
    assert (params["host"], params["port"]) == (settings.MQTT_HOST, settings.MQTT_PORT)


def test_connection_params_default_to_tls_when_a_tls_port_is_configured(device, settings):
    settings.MQTT_TLS_PORT = 8883
    params = device.connection_params()
    assert (params["securemode"], params["port"]) == (2, 8883)
    assert params["signmethod"] == "hmacsha256"
    assert params["clientId"] == "sensor-001"
    verdict = signing.verify(
        params["mqttClientId"], params["mqttUsername"], params["mqttPassword"], device.device_secret
    )
    assert verdict.accepted and verdict.parsed.timestamp == str(params["timestamp"])


def test_asking_for_tls_without_a_tls_port_is_an_option_error(device, settings):
    settings.MQTT_TLS_PORT = None
    with pytest.raises(OptionError) as caught:
        device.connection_params(ConnectionOptions(securemode=2))
    assert caught.value.field == "securemode"
    assert "PORTAL_MQTT_TLS_PORT" in str(caught.value.message)
    with translation.override("zh-hans"):
        with pytest.raises(OptionError) as caught:
            device.connection_params(ConnectionOptions(securemode=2))
        assert str(caught.value.message).startswith("本部署没有 TLS 监听端口")


def test_rotating_a_secret_changes_it_and_is_audited(device, owner):
    old = device.device_secret
    new = device.rotate_secret(actor=owner)
    assert new != old and Device.objects.get(pk=device.pk).device_secret == new
    event = AuditEvent.objects.get(action=AuditEvent.Action.ROTATE_SECRET)
    assert event.actor == owner and event.targets == ["a1B2c3D4e5F/sensor-001"]


def test_the_product_id_sys_is_reserved_so_topic_spaces_cannot_overlap(db):
    # A device "pk" of a product "sys" would own /sys/pk/#: every device of product "pk"'s
    # system topics (spec §4's two spaces).
    with pytest.raises(ValidationError) as caught:
        Product(product_id="sys", name="x").full_clean()
    assert "product_id" in caught.value.message_dict
    with pytest.raises(ValidationError):
        Product.objects.create(product_id="sys", name="x")
    assert Product.objects.create(product_id="sys2", name="x").pk
