"""The one verifier: registry look-up, the signing rules, topic rights and the short cache."""

import time

import pytest

from broker import verifier
from devices.models import Device, Product

DOC_CLIENT_ID = "12345|securemode=3,signmethod=hmacsha1,timestamp=789|"
DOC_PASSWORD = "dc8f8498a1a115b58f6a3afd526bc62a1665bf48"


@pytest.fixture(autouse=True)
def fresh_cache():
    verifier.registry_cache.clear()
    yield
    verifier.registry_cache.clear()


def test_every_verify_vector(db, vectors):
    for vector in vectors["verify"]:
        product, _ = Product.objects.get_or_create(product_id=vector["productId"], defaults={"name": "p"})
        Device.objects.update_or_create(
            product=product, device_id=vector["deviceId"],
            defaults={"device_secret": vector["deviceSecret"]},
        )
        verifier.registry_cache.clear()
        verdict = verifier.verify_connect(
            vector["mqttClientId"], vector["mqttUsername"], vector["mqttPassword"]
        )
        assert verdict.accepted is vector["accept"], vector["name"]


def test_an_unknown_device_is_refused_with_a_reason(db):
    verdict = verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD)
    assert not verdict.accepted and verdict.code == "unknown_device"
    assert verifier.connack_code(verdict) == 0x04


def test_a_disabled_device_is_refused_only_when_correctly_signed(doc_device):
    Device.objects.filter(pk=doc_device.pk).update(enabled=False)
    assert verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD).code == "device_disabled"
    assert verifier.verify_connect(DOC_CLIENT_ID, "device&pk", "0" * 40).code == "bad_signature"


def test_the_transport_must_match_securemode(doc_device):
    assert verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD, "tcp").accepted
    verdict = verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD, "tls")
    assert verdict.code == "securemode_mismatch"
    assert verifier.connack_code(verdict) == 0x05


def test_a_malformed_client_id_maps_to_identifier_rejected(db):
    verdict = verifier.verify_connect("no-bars", "device&pk", DOC_PASSWORD)
    assert verdict.code == "malformed_client_id"
    assert verifier.connack_code(verdict) == 0x02


def test_reasons_never_carry_the_secret_or_password(doc_device):
    for password in (DOC_PASSWORD, "f" * 40):
        verdict = verifier.verify_connect(DOC_CLIENT_ID, "device&pk", password, "tls")
        assert "secret" not in verdict.reason.replace("device's secret", "")
        assert password not in verdict.reason


@pytest.mark.parametrize("field", ["secret", "enabled"])
def test_a_change_takes_effect_within_two_seconds_with_the_cache_on(doc_device, settings, field):
    settings.MQTT_AUTH_CACHE_MS = 1000
    assert verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD).accepted  # cached now
    changed_at = time.monotonic()
    if field == "secret":
        doc_device.rotate_secret()
    else:  # a raw queryset update: no signal, no save(), as another process might do it
        Device.objects.filter(pk=doc_device.pk).update(enabled=False)
    while verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD).accepted:
        assert time.monotonic() - changed_at < 2, "the change was not seen within 2 seconds"
        time.sleep(0.05)


def test_the_cache_answers_repeated_connects_without_the_database(doc_device, settings,
                                                                   django_assert_num_queries):
    settings.MQTT_AUTH_CACHE_MS = 1000
    assert verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD).accepted
    with django_assert_num_queries(0):
        assert verifier.verify_connect(DOC_CLIENT_ID, "device&pk", DOC_PASSWORD).accepted


def test_the_cache_setting_cannot_break_the_two_second_rule(monkeypatch):
    import importlib

    from django.core.exceptions import ImproperlyConfigured

    import portal.settings

    monkeypatch.setenv("PORTAL_MQTT_AUTH_CACHE_MS", "5000")
    with pytest.raises(ImproperlyConfigured, match="PORTAL_MQTT_AUTH_CACHE_MS"):
        importlib.reload(portal.settings)
    monkeypatch.delenv("PORTAL_MQTT_AUTH_CACHE_MS")
    importlib.reload(portal.settings)


@pytest.mark.parametrize(
    "topic, allowed",
    [("/sys/pk/device/thing/event/post", True),
     ("/pk/device/up", True),
     ("/pk/device", True),
     ("/sys/pk/device/#", True),
     ("/pk/device/+/data", True),
     ("/pk/devices/up", False),
     ("/pk/+/up", False),
     ("/sys/pk/#", False),
     ("#", False),
     ("pk/device/up", False),
     ("/sys/pk/other/x", False),
     ("", False)],
)
def test_topic_rights(topic, allowed):
    assert verifier.topic_allowed("pk", "device", topic) is allowed


@pytest.mark.parametrize("qos, retain, refused", [(0, False, False), (1, False, False),
                                                  (2, False, True), (1, True, True)])
def test_the_publish_profile(qos, retain, refused):
    assert (verifier.publish_refusal(qos, retain) is not None) is refused


def test_cached_only_verifies_a_cached_device_without_a_query_and_refuses_to_query_otherwise(
    doc_device, settings, django_assert_num_queries
):
    """The embedded broker's fast path (verified in its event loop, where no query may run)."""
    import pytest as _pytest

    from broker import verifier
    from devices import signing

    settings.MQTT_AUTH_CACHE_MS = 1000
    verifier.registry_cache.clear()
    fields = signing.render("pk", "device", "secret", client_id="c1", securemode=3,
                            signmethod="hmacsha256", timestamp=None)
    args = (fields.mqtt_client_id, fields.mqtt_username, fields.mqtt_password, "tcp")
    with django_assert_num_queries(0), _pytest.raises(verifier.NotCached):
        verifier.authenticate_connect(*args, cached_only=True)
    assert verifier.authenticate_connect(*args).accepted  # looks it up, keeps it
    with django_assert_num_queries(0):
        assert verifier.authenticate_connect(*args, cached_only=True).accepted
    verifier.registry_cache.clear()
