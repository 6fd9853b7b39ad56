"""The embedded broker, against real paho-mqtt clients over 127.0.0.1 (spec §1–4)."""

import socket
import time

import paho.mqtt.client as mqtt
import pytest

from bench.harness import connect_packet
from devices import signing
from devices.models import Device, DeviceStatus, Product
from tests.broker_fixtures import MqttTestClient, free_port

SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"
# paho 2.x reports a MQTT 3.1.1 CONNACK code as its MQTT 5 reason code: 0x01 → 0x84,
# 0x04 → 0x86, 0x05 → 0x87.
ACCEPTED = 0
UNSUPPORTED_PROTOCOL_VERSION = 0x84
BAD_USERNAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
IDENTIFIER_REJECTED = 0x85  # 0x02

# The CONNACK each refused vector must get (README, "What the embedded broker does"): a form
# problem of the mqttClientId is "identifier rejected", a wrong signature "bad username or
# password". A broker that refused everything for another reason would fail here.
REFUSED_VECTOR_CODES = {
    "signed with another secret": BAD_USERNAME_OR_PASSWORD,
    "timestamp in clientId differs from the signed one": BAD_USERNAME_OR_PASSWORD,
    "clientId longer than 64 characters": IDENTIFIER_REJECTED,
    "unsupported signmethod": IDENTIFIER_REJECTED,
    "securemode missing": IDENTIFIER_REJECTED,
}


@pytest.fixture
def clients():
    opened = []
    yield opened
    for client in opened:
        client.close()


def make_device(product_id="a1B2c3D4e5F", device_id="sensor-001", secret=SECRET, enabled=True):
    product, _ = Product.objects.get_or_create(product_id=product_id, defaults={"name": product_id})
    return Device.objects.create(
        product=product, device_id=device_id, device_secret=secret, enabled=enabled
    )


def credentials(device, client_id="dev-1", securemode=3, exclusive=False, secret=None):
    rendered = signing.render(
        device.product.product_id, device.device_id, secret or device.device_secret,
        client_id=client_id, securemode=securemode, signmethod="hmacsha256",
        timestamp=1700000000000, exclusive=exclusive,
    )
    return rendered.mqtt_client_id, rendered.mqtt_username, rendered.mqtt_password


def open_client(broker, clients, fields, tls=False, **kwargs):
    client = MqttTestClient(
        *fields, host=broker.host, port=broker.tls_port if tls else broker.port,
        ca_file=broker.ca_file if tls else None, **kwargs,
    )
    clients.append(client)
    return client


def connect(broker, clients, fields, tls=False, **kwargs):
    client = open_client(broker, clients, fields, tls=tls, **kwargs)
    client.connect()
    return client


def wait_until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def status_of(device):
    return Device.objects.get(pk=device.pk).status


# -- authentication ------------------------------------------------------------------------------


def _verify_vectors():
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "data" / "signing.json").read_text())["verify"]


@pytest.mark.parametrize("vector", _verify_vectors(), ids=lambda v: v["name"])
def test_every_verify_vector_is_a_real_connect(mqtt_broker, clients, vector):
    make_device(vector["productId"], vector["deviceId"], vector["deviceSecret"])
    fields = (vector["mqttClientId"], vector["mqttUsername"], vector["mqttPassword"])
    code = connect(mqtt_broker, clients, fields).reason_code
    if vector["accept"]:
        assert code == ACCEPTED
    else:
        assert code == REFUSED_VECTOR_CODES[vector["name"]]


def test_an_unknown_device_is_refused_and_the_reason_logged_without_the_password(mqtt_broker, clients):
    device = make_device()
    fields = credentials(device)
    device.delete()
    mark = mqtt_broker.log_mark()
    assert connect(mqtt_broker, clients, fields).reason_code == BAD_USERNAME_OR_PASSWORD
    log = mqtt_broker.wait_for_log(mark, "unknown_device")
    assert fields[2] not in log and SECRET not in log


def test_a_bad_signature_is_refused_with_its_reason_and_never_the_password(mqtt_broker, clients):
    device = make_device()
    client_id, username, _password = credentials(device)
    wrong = credentials(device, secret="another-secret")[2]
    mark = mqtt_broker.log_mark()
    assert connect(mqtt_broker, clients, (client_id, username, wrong)).reason_code == BAD_USERNAME_OR_PASSWORD
    log = mqtt_broker.wait_for_log(mark, "bad_signature")
    assert wrong not in log and SECRET not in log


@pytest.mark.parametrize(
    "case, reason",
    [("malformed clientId", "bad_securemode"), ("disabled", "device_disabled"),
     ("securemode on the wrong port", "securemode_mismatch"), ("bad signature", "bad_signature")],
)
def test_every_refusal_is_logged_with_its_reason_and_never_a_secret(mqtt_broker, clients, case, reason):
    device = make_device(enabled=case != "disabled")
    client_id, username, password = credentials(device, securemode=2 if "port" in case else 3)
    if case == "malformed clientId":
        client_id = client_id.replace("securemode=3", "securemode=9")
    if case == "bad signature":
        password = credentials(device, secret="not-the-secret")[2]
    mark = mqtt_broker.log_mark()
    assert connect(mqtt_broker, clients, (client_id, username, password)).reason_code != ACCEPTED
    log = mqtt_broker.wait_for_log(mark, reason)
    assert "Refused CONNECT" in log
    assert password not in log and SECRET not in log


def test_a_disabled_device_is_refused(mqtt_broker, clients):
    device = make_device(enabled=False)
    mark = mqtt_broker.log_mark()
    assert connect(mqtt_broker, clients, credentials(device)).reason_code == NOT_AUTHORIZED
    mqtt_broker.wait_for_log(mark, "device_disabled")


def test_a_malformed_username_is_refused(mqtt_broker, clients):
    device = make_device()
    client_id, _username, password = credentials(device)
    fields = (client_id, "sensor-001", password)
    assert connect(mqtt_broker, clients, fields).reason_code == BAD_USERNAME_OR_PASSWORD


def test_securemode_2_on_the_plain_tcp_port_is_refused(mqtt_broker, clients):
    device = make_device()
    mark = mqtt_broker.log_mark()
    code = connect(mqtt_broker, clients, credentials(device, securemode=2)).reason_code
    assert code == NOT_AUTHORIZED
    mqtt_broker.wait_for_log(mark, "securemode_mismatch")


def test_tls_with_the_development_ca_and_securemode_2_is_accepted(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device, securemode=2), tls=True)
    assert client.reason_code == ACCEPTED


def test_securemode_3_on_the_tls_port_is_refused(mqtt_broker, clients):
    device = make_device()
    mark = mqtt_broker.log_mark()
    code = connect(mqtt_broker, clients, credentials(device, securemode=3), tls=True).reason_code
    assert code == NOT_AUTHORIZED
    assert "over tls" in mqtt_broker.wait_for_log(mark, "securemode_mismatch")


def test_a_connect_with_a_will_is_refused(mqtt_broker, clients):
    device = make_device()
    mark = mqtt_broker.log_mark()
    client = connect(
        mqtt_broker, clients, credentials(device), will=("/a1B2c3D4e5F/sensor-001/will", b"bye")
    )
    assert client.reason_code == NOT_AUTHORIZED
    mqtt_broker.wait_for_log(mark, "will messages are not supported")


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv31], ids=["5.0", "3.1"])
def test_other_protocol_versions_are_refused_promptly(mqtt_broker, clients, protocol):
    device = make_device()
    mark = mqtt_broker.log_mark()
    client = open_client(mqtt_broker, clients, credentials(device), protocol=protocol)
    started = time.monotonic()
    client.connect(timeout=5)
    assert client.disconnected.wait(5)
    assert time.monotonic() - started < 2
    assert client.reason_code == UNSUPPORTED_PROTOCOL_VERSION
    mqtt_broker.wait_for_log(mark, "is not spoken by the embedded broker")


def test_a_5_0_connect_gets_connack_0x01_then_the_connection_closes(mqtt_broker):
    """The raw bytes: an MQTT 5.0 CONNECT (with its properties) gets 20 02 00 01, then EOF."""
    client_id = b"raw-v5"
    variable = b"\x00\x04MQTT\x05\x02\x00\x3c\x00"  # level 5, clean start, keep-alive 60, no props
    payload = len(client_id).to_bytes(2, "big") + client_id
    packet = bytes([0x10, len(variable) + len(payload)]) + variable + payload
    with socket.create_connection((mqtt_broker.host, mqtt_broker.port), timeout=2) as sock:
        sock.sendall(packet)
        assert sock.recv(4) == b"\x20\x02\x00\x01"
        assert sock.recv(1) == b""


# -- sessions (spec §4) ---------------------------------------------------------------------------


def test_a_newer_connection_replaces_the_old_whatever_the_client_ids(mqtt_broker, clients):
    device = make_device()
    first = connect(mqtt_broker, clients, credentials(device, client_id="first"))
    assert first.reason_code == ACCEPTED
    second = connect(mqtt_broker, clients, credentials(device, client_id="second"))
    assert second.reason_code == ACCEPTED
    assert first.disconnected.wait(2)
    assert second.subscribe("/a1B2c3D4e5F/sensor-001/#", 1) == 1
    second.publish("/a1B2c3D4e5F/sensor-001/up", b"still here", qos=1)
    assert [m.payload for m in second.wait_for_messages(1)] == [b"still here"]
    assert second.connected
    time.sleep(0.5)  # let every status write land: the replaced connection must not mark it offline
    assert status_of(device) == DeviceStatus.ONLINE


def test_a_takeover_is_logged_at_info_and_a_disable_as_a_warning(mqtt_broker, clients):
    device = make_device()
    first = connect(mqtt_broker, clients, credentials(device, client_id="first"))
    mark = mqtt_broker.log_mark()
    second = connect(mqtt_broker, clients, credentials(device, client_id="second"))
    assert (first.reason_code, second.reason_code) == (ACCEPTED, ACCEPTED)
    log = mqtt_broker.wait_for_log(mark, "replaced by a newer connection")
    assert "INFO broker.embedded: Disconnecting a1B2c3D4e5F/sensor-001 (clientId 'first')" in log
    mark = mqtt_broker.log_mark()
    Device.objects.filter(pk=device.pk).update(enabled=False)
    log = mqtt_broker.wait_for_log(mark, "the device was disabled")
    assert "WARNING broker.embedded: Disconnecting a1B2c3D4e5F/sensor-001 (clientId 'second')" in log


def test_an_exclusive_connection_refuses_newcomers_while_it_lives(mqtt_broker, clients):
    device = make_device()
    first = connect(mqtt_broker, clients, credentials(device, client_id="first", exclusive=True))
    assert first.reason_code == ACCEPTED
    mark = mqtt_broker.log_mark()
    newcomer = connect(mqtt_broker, clients, credentials(device, client_id="second"))
    assert newcomer.reason_code == NOT_AUTHORIZED
    mqtt_broker.wait_for_log(mark, "exclusive mode")
    time.sleep(0.3)
    assert first.connected
    first.close()
    assert wait_until(lambda: status_of(device) == DeviceStatus.OFFLINE)
    later = connect(mqtt_broker, clients, credentials(device, client_id="second"))
    assert later.reason_code == ACCEPTED


def test_a_wrong_password_with_the_same_client_id_does_not_disturb_the_device(mqtt_broker, clients):
    device = make_device()
    fields = credentials(device, client_id="same")
    device_client = connect(mqtt_broker, clients, fields)
    assert device_client.reason_code == ACCEPTED
    assert device_client.subscribe("/a1B2c3D4e5F/sensor-001/#", 1) == 1
    intruder = connect(mqtt_broker, clients, (fields[0], fields[1], "0" * 64))
    assert intruder.reason_code == BAD_USERNAME_OR_PASSWORD
    time.sleep(0.5)
    assert device_client.connected
    device_client.publish("/a1B2c3D4e5F/sensor-001/up", b"after", qos=1)
    assert [m.payload for m in device_client.wait_for_messages(1)] == [b"after"]


def test_disabling_a_connected_device_disconnects_it_within_two_seconds(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device))
    assert client.reason_code == ACCEPTED
    started = time.monotonic()
    Device.objects.filter(pk=device.pk).update(enabled=False)  # not through save(): any way counts
    assert client.disconnected.wait(3)
    assert time.monotonic() - started < 2
    assert connect(mqtt_broker, clients, credentials(device)).reason_code == NOT_AUTHORIZED


def test_rotating_the_secret_disconnects_the_device_and_refuses_the_old_password(mqtt_broker, clients):
    device = make_device()
    old_fields = credentials(device)
    client = connect(mqtt_broker, clients, old_fields)
    assert client.reason_code == ACCEPTED
    device.rotate_secret()
    assert client.disconnected.wait(2)
    assert connect(mqtt_broker, clients, old_fields).reason_code == BAD_USERNAME_OR_PASSWORD
    assert connect(mqtt_broker, clients, credentials(device)).reason_code == ACCEPTED


# -- protocol profile and topics (spec §1, §4) -------------------------------------------------------


def test_a_subscription_at_qos_2_is_granted_qos_1(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device))
    assert client.subscribe("/sys/a1B2c3D4e5F/sensor-001/#", 2) == 1


def test_a_publish_at_qos_2_closes_the_connection_and_is_not_delivered(mqtt_broker, clients):
    device = make_device()
    bystander = connect(mqtt_broker, clients, credentials(make_device(device_id="other")))
    publisher = connect(mqtt_broker, clients, credentials(device, client_id="publisher"))
    assert publisher.subscribe("/a1B2c3D4e5F/sensor-001/#", 1) == 1
    mark = mqtt_broker.log_mark()
    publisher.publish("/a1B2c3D4e5F/sensor-001/up", b"qos2", qos=2)
    assert publisher.disconnected.wait(2)
    mqtt_broker.wait_for_log(mark, "QoS 2 is not supported")
    assert publisher.messages == []
    assert bystander.connected


def test_a_retained_publish_closes_the_connection_and_nothing_is_retained(mqtt_broker, clients):
    device = make_device()
    topic = "/a1B2c3D4e5F/sensor-001/state"
    publisher = connect(mqtt_broker, clients, credentials(device, client_id="pub"))
    mark = mqtt_broker.log_mark()
    publisher.publish(topic, b"retained?", qos=1, retain=True)
    assert publisher.disconnected.wait(2)
    mqtt_broker.wait_for_log(mark, "retained messages are not supported")
    subscriber = connect(mqtt_broker, clients, credentials(device, client_id="sub"))
    assert subscriber.subscribe(topic, 1) == 1
    time.sleep(0.5)
    assert subscriber.messages == []


def test_a_device_may_use_both_of_its_topic_spaces(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device))
    assert client.subscribe("/sys/a1B2c3D4e5F/sensor-001/#", 1) == 1
    assert client.subscribe("/a1B2c3D4e5F/sensor-001/+/data", 0) == 0
    client.publish("/sys/a1B2c3D4e5F/sensor-001/thing/event/post", b"a", qos=1)
    client.publish("/a1B2c3D4e5F/sensor-001/room/data", b"b", qos=0)
    assert sorted(m.payload for m in client.wait_for_messages(2)) == [b"a", b"b"]


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "/a1B2c3D4e5F/#", "/a1B2c3D4e5F/+/data", "/sys/a1B2c3D4e5F/sensor-002/#",
     "/a1B2c3D4e5F/sensor-0011/x", "a1B2c3D4e5F/sensor-001/x"],
)
def test_a_subscription_outside_its_space_gets_suback_0x80(mqtt_broker, clients, topic_filter):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device))
    assert client.subscribe(topic_filter, 1) == 0x80
    assert client.connected


def test_a_publish_outside_its_space_is_dropped_and_logged(mqtt_broker, clients):
    intruder_device = make_device()
    victim_device = make_device(device_id="sensor-002")
    victim = connect(mqtt_broker, clients, credentials(victim_device, client_id="victim"))
    assert victim.subscribe("/a1B2c3D4e5F/sensor-002/#", 1) == 1
    intruder = connect(mqtt_broker, clients, credentials(intruder_device, client_id="intruder"))
    mark = mqtt_broker.log_mark()
    intruder.publish("/a1B2c3D4e5F/sensor-002/cmd", b"forged", qos=1)
    mqtt_broker.wait_for_log(mark, "Refused publish to '/a1B2c3D4e5F/sensor-002/cmd'")
    victim.publish("/a1B2c3D4e5F/sensor-002/cmd", b"genuine", qos=1)
    assert [m.payload for m in victim.wait_for_messages(1)] == [b"genuine"]
    time.sleep(0.3)
    assert [m.payload for m in victim.messages] == [b"genuine"]
    assert intruder.connected


# -- status (spec §4) -----------------------------------------------------------------------------------


def test_status_follows_connect_and_disconnect(mqtt_broker, clients):
    device = make_device()
    assert status_of(device) == DeviceStatus.INACTIVE
    client = connect(mqtt_broker, clients, credentials(device))
    assert wait_until(lambda: status_of(device) == DeviceStatus.ONLINE)
    seen = Device.objects.get(pk=device.pk)
    assert seen.first_activated_at is not None and seen.last_online_at is not None
    first_activation = seen.first_activated_at
    client.close()
    assert wait_until(lambda: status_of(device) == DeviceStatus.OFFLINE)
    again = connect(mqtt_broker, clients, credentials(device))
    assert wait_until(lambda: status_of(device) == DeviceStatus.ONLINE)
    assert Device.objects.get(pk=device.pk).first_activated_at == first_activation
    again.close()


def test_a_refused_device_stays_inactive(mqtt_broker, clients):
    device = make_device()
    fields = credentials(device)
    connect(mqtt_broker, clients, (fields[0], fields[1], "f" * 64))
    time.sleep(0.3)
    assert status_of(device) == DeviceStatus.INACTIVE


def test_a_broker_killed_while_a_device_is_online_leaves_no_device_shown_online(mqtt_broker, clients):
    device = make_device()
    connect(mqtt_broker, clients, credentials(device))
    assert wait_until(lambda: status_of(device) == DeviceStatus.ONLINE)
    mqtt_broker.restart(kill=True)  # no chance to say goodbye: the start must clean up
    assert status_of(device) == DeviceStatus.OFFLINE
    client = connect(mqtt_broker, clients, credentials(device))
    assert client.reason_code == ACCEPTED
    assert wait_until(lambda: status_of(device) == DeviceStatus.ONLINE)


def test_a_silent_client_is_dropped_after_one_and_a_half_keepalives(mqtt_broker):
    """A device that vanished (no FIN) must go offline: a raw CONNECT with keep-alive 1 s."""
    device = make_device()
    with socket.create_connection((mqtt_broker.host, mqtt_broker.port), timeout=5) as sock:
        sock.sendall(connect_packet(*credentials(device), keepalive=1))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the broker, not by us
        assert time.monotonic() - started < 3
    assert wait_until(lambda: status_of(device) == DeviceStatus.OFFLINE)


# -- the registry cache across processes (spec §4: within 2 seconds, however it was changed) ----


@pytest.fixture
def cached_broker(_mqtt_broker_process, transactional_db, tmp_path):
    """A second broker with the production cache (1 s) instead of the fixture's 0."""
    import dataclasses

    broker = dataclasses.replace(
        _mqtt_broker_process, port=free_port(), tls_port=free_port(), process=None,
        log_path=tmp_path / "cached-broker.log", extra_env={"PORTAL_MQTT_AUTH_CACHE_MS": "1000"},
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.parametrize("change", ["disable", "rotate"])
def test_with_the_cache_a_change_made_elsewhere_is_enforced_within_two_seconds(cached_broker, clients, change):
    device = make_device()
    fields = credentials(device)
    first = connect(cached_broker, clients, fields)
    assert first.reason_code == ACCEPTED  # the broker has now cached the device
    first.close()
    changed_at = time.monotonic()
    if change == "disable":
        Device.objects.filter(pk=device.pk).update(enabled=False)  # this process, not the broker's
    else:
        device.rotate_secret()
    while connect(cached_broker, clients, fields).reason_code == ACCEPTED:
        assert time.monotonic() - changed_at < 2, "the broker kept accepting after 2 seconds"
        time.sleep(0.1)
    assert time.monotonic() - changed_at < 2
