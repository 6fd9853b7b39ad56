"""The connection log at the real embedded broker: every refusal the verifier knows and every way a
session ends, each from real CONNECTs (paho, or raw bytes where paho cannot send them), each
producing its row and its words in English and Chinese. And the secret scan: known wrong
passwords and the device secret appear neither in the database file nor in any response."""

import socket
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from django.utils import translation

from bench.harness import connect_packet, remaining_length
from devices import signing
from devices.models import ConnectionEvent, Device
from tests.broker_fixtures import MqttTestClient
from tests.test_broker import SECRET, credentials, make_device

pytest_plugins = ["tests.broker_fixtures"]
pytestmark = pytest.mark.broker


@pytest.fixture
def clients():
    opened = []
    yield opened
    for client in opened:
        client.close()


def connect(broker, clients, fields, tls=False, **kwargs):
    client = MqttTestClient(*fields, host=broker.host, port=broker.tls_port if tls else broker.port,
                            ca_file=broker.ca_file if tls else None, **kwargs)
    clients.append(client)
    client.connect()
    return client


def wait_for_event(timeout=5.0, **filters):
    """The newest event matching ``filters`` once the broker's log thread has written it."""
    deadline = time.monotonic() + timeout
    while True:
        event = ConnectionEvent.objects.filter(**filters).first()
        if event is not None:
            return event
        if time.monotonic() > deadline:
            seen = list(ConnectionEvent.objects.values_list("kind", "code", "device_id"))
            pytest.fail(f"no event {filters}; the log holds {seen}")
        time.sleep(0.05)


def words(event):
    """(reason, hint) in English and in Chinese."""
    with translation.override("en"):
        english = (event.reason, event.hint or "")
    with translation.override("zh-hans"):
        chinese = (event.reason, event.hint or "")
    return english, chinese


def raw_connect(broker, packet):
    with socket.create_connection((broker.host, broker.port), timeout=3) as sock:
        sock.sendall(packet)
        try:
            return sock.recv(4)
        except OSError:
            return b""


def _string(value):
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


# (what is wrong, how to make the fields wrong, code, CONNACK, English words, Chinese words)
FIELD_REFUSALS = [
    ("no '|' in the mqttClientId", lambda c, u, p: ("dev-1", u, p), "malformed_client_id", 2,
     "could not be read", "无法解析"),
    ("a 65-character clientId", lambda c, u, p: ("x" * 65 + c[c.index("|"):], u, p),
     "client_id_too_long", 2, "too long", "太长"),
    ("no securemode", lambda c, u, p: (c.replace("securemode=3,", ""), u, p),
     "missing_securemode", 2, "no securemode", "没有 securemode"),
    ("securemode=9", lambda c, u, p: (c.replace("securemode=3", "securemode=9"), u, p),
     "bad_securemode", 2, "neither 2 nor 3", "既不是 2 也不是 3"),
    ("signmethod=sha512", lambda c, u, p: (c.replace("hmacsha256", "sha512"), u, p),
     "unsupported_signmethod", 2, "not one the platform supports", "不支持"),
    ("a timestamp with letters", lambda c, u, p: (c.replace("timestamp=1", "timestamp=x1"), u, p),
     "bad_timestamp", 2, "not a number of milliseconds", "不是毫秒数"),
    ("exclusive=maybe", lambda c, u, p: (c[:-1] + ",exclusive=maybe|", u, p),
     "bad_exclusive", 2, "neither true nor false", "既不是 true 也不是 false"),
    ("a username without '&'", lambda c, u, p: (c, "sensor-001", p), "malformed_username", 4,
     "is not deviceId&productId", "不是 deviceId&productId"),
    ("an unknown deviceId", lambda c, u, p: (c, "ghost&a1B2c3D4e5F", p), "unknown_device", 4,
     "No such device", "没有该设备"),
    ("a password of another secret", lambda c, u, p: (c, u, "0" * 64), "bad_signature", 4,
     "not the signature", "不是该设备密钥的签名"),
]


@pytest.mark.parametrize("case, spoil, code, connack, english, chinese", FIELD_REFUSALS,
                         ids=[case[0] for case in FIELD_REFUSALS])
def test_each_refusal_of_the_fields_is_logged_with_its_words(mqtt_broker, clients, case, spoil,
                                                             code, connack, english, chinese):
    device = make_device()
    fields = spoil(*credentials(device))
    assert connect(mqtt_broker, clients, fields).reason_code != 0
    event = wait_for_event(kind="refused", code=code)
    assert event.connack == connack
    assert event.broker == "embedded" and event.transport == "tcp"
    assert event.peer.startswith("127.0.0.1:")
    if code == "unknown_device":
        assert (event.product_id, event.device_id) == (device.product_id, None)
    elif code != "malformed_username":
        assert event.device_id == device.pk
    (reason_en, _hint_en), (reason_zh, _hint_zh) = words(event)
    assert english in reason_en
    assert chinese in reason_zh


def test_a_wrong_sign_method_is_diagnosed_on_the_device_page_words(mqtt_broker, clients):
    device = make_device()
    client_id, username, _password = credentials(device)
    parsed = signing.parse_connect(client_id, username)
    sha1 = signing.sign(SECRET, signing.accepted_contents(parsed)[0], "hmacsha1")
    assert connect(mqtt_broker, clients, (client_id, username, sha1)).reason_code == 0x86
    event = wait_for_event(kind="refused", code="bad_signature", device=device)
    (_r, hint_en), (_rz, hint_zh) = words(event)
    assert "hmacsha1" in hint_en and "signmethod" in hint_en
    assert "hmacsha1" in hint_zh and "密钥无误" in hint_zh


def test_a_disabled_device_is_logged(mqtt_broker, clients):
    device = make_device(enabled=False)
    assert connect(mqtt_broker, clients, credentials(device)).reason_code == 0x87
    event = wait_for_event(kind="refused", code="device_disabled", device=device)
    (reason, hint), (reason_zh, _h) = words(event)
    assert (event.connack, reason, reason_zh) == (5, "The device is disabled in the portal.",
                                                  "该设备已在门户中被禁用。")
    assert "Enable the device" in hint


@pytest.mark.parametrize("securemode, tls, port_words",
                         [(2, False, "plain TCP"), (3, True, "TLS")], ids=["2 on tcp", "3 on tls"])
def test_a_securemode_on_the_wrong_port_is_logged_with_the_transport(mqtt_broker, clients,
                                                                     securemode, tls, port_words):
    device = make_device()
    fields = credentials(device, securemode=securemode)
    assert connect(mqtt_broker, clients, fields, tls=tls).reason_code == 0x87
    event = wait_for_event(kind="refused", code="securemode_mismatch", device=device)
    assert event.transport == ("tls" if tls else "tcp")
    (_reason, hint), (_rz, hint_zh) = words(event)
    assert f"securemode={securemode}" in hint and f"the {port_words} port" in hint
    assert f"securemode={securemode}" in hint_zh


def test_an_exclusive_holder_refuses_a_newcomer_and_it_is_logged(mqtt_broker, clients):
    device = make_device()
    holder = connect(mqtt_broker, clients, credentials(device, client_id="a", exclusive=True))
    assert holder.reason_code == 0
    assert connect(mqtt_broker, clients, credentials(device, client_id="b")).reason_code == 0x87
    event = wait_for_event(kind="refused", code="exclusive_connection", device=device)
    assert event.client_id == "b"
    assert "exclusive mode" in words(event)[0][0] and "独占" in words(event)[1][0]


def test_a_will_is_refused_and_logged(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device), will=("/a1B2c3D4e5F/sensor-001/w", b"x"))
    assert client.reason_code == 0x87
    event = wait_for_event(kind="refused", code="will_not_supported", device=device)
    assert "will" in words(event)[0][0] and "遗嘱" in words(event)[1][0]


def test_missing_credentials_and_the_reserved_flag_are_logged(mqtt_broker):
    device = make_device()
    client_id = credentials(device)[0]
    no_credentials = b"\x00\x04MQTT\x04\x02\x00\x3c" + _string(client_id)
    assert raw_connect(mqtt_broker, b"\x10" + remaining_length(len(no_credentials))
                       + no_credentials) == b"\x20\x02\x00\x04"
    reserved = bytearray(connect_packet(*credentials(device)))
    reserved[reserved.index(b"MQTT\x04") + 5] |= 0x01
    assert raw_connect(mqtt_broker, bytes(reserved)) == b"\x20\x02\x00\x05"
    missing = wait_for_event(kind="refused", code="missing_credentials")
    assert missing.connack == 4 and missing.client_id == "dev-1"
    reserved_event = wait_for_event(kind="refused", code="reserved_flag", device=device)
    assert "reserved flag" in words(reserved_event)[0][0]
    assert "保留标志位" in words(reserved_event)[1][0]


@pytest.mark.parametrize("protocol, version", [(mqtt.MQTTv5, "5.0"), (mqtt.MQTTv31, "3.1")],
                         ids=["5.0", "3.1"])
def test_another_mqtt_version_is_logged_for_staff(mqtt_broker, clients, protocol, version):
    device = make_device()
    client = MqttTestClient(*credentials(device), host=mqtt_broker.host, port=mqtt_broker.port,
                            protocol=protocol)
    clients.append(client)
    client.connect()
    event = wait_for_event(kind="refused", code="unsupported_protocol", protocol=version)
    assert (event.connack, event.product_id, event.device_id) == (1, None, None)
    assert "MQTT 3.1.1" in words(event)[0][1] and "MQTT 3.1.1" in words(event)[1][1]


def test_something_else_than_mqtt_is_logged_as_not_a_connect(mqtt_broker):
    assert raw_connect(mqtt_broker, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    event = wait_for_event(kind="refused", code="not_a_connect")
    assert (event.connack, event.product_id) == (None, None)
    assert "CONNECT" in words(event)[0][1] and "CONNECT" in words(event)[1][1]


@pytest.fixture
def clock_broker(_mqtt_broker_process, transactional_db, tmp_path):
    """A second broker that requires a timestamp within 60 s of its clock."""
    import dataclasses

    from tests.broker_fixtures import free_port

    broker = dataclasses.replace(
        _mqtt_broker_process, port=free_port(), tls_port=free_port(), process=None,
        log_path=tmp_path / "clock-broker.log", extra_env={"PORTAL_MQTT_MAX_CLOCK_SKEW_MS": "60000"},
    )
    broker.start()
    yield broker
    broker.stop()


def test_clock_refusals_are_logged_with_the_sdk_timestamp_named(clock_broker, clients):
    device = make_device()
    rendered = signing.render(device.product.product_id, device.device_id, SECRET,
                              client_id="dev-1", securemode=3, signmethod="hmacsha256",
                              timestamp=None)
    fields = (rendered.mqtt_client_id, rendered.mqtt_username, rendered.mqtt_password)
    assert connect(clock_broker, clients, fields).reason_code == 0x87
    missing = wait_for_event(kind="refused", code="missing_timestamp", device=device)
    assert "requires a timestamp" in words(missing)[0][0]
    fixed = signing.render(device.product.product_id, device.device_id, SECRET, client_id="dev-2",
                           securemode=3, signmethod="hmacsha256", timestamp=2524608000000)
    fields = (fixed.mqtt_client_id, fixed.mqtt_username, fixed.mqtt_password)
    assert connect(clock_broker, clients, fields).reason_code == 0x87
    event = wait_for_event(kind="refused", code="timestamp_out_of_window", device=device)
    (reason, hint), (_rz, hint_zh) = words(event)
    assert "too far from the broker's clock" in reason
    assert "2524608000000" in hint and "2050" in hint and "2050" in hint_zh


# -- how sessions end -----------------------------------------------------------------------------


def test_a_session_ended_by_the_device_is_logged_with_its_length(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device))
    accepted = wait_for_event(kind="connected", device=device)
    assert (accepted.code, accepted.connack, accepted.client_id) == ("accepted", 0, "dev-1")
    time.sleep(1.1)
    client.close()
    ended = wait_for_event(kind="disconnected", device=device)
    assert ended.code == "client_disconnect" and ended.session_seconds >= 1
    assert words(ended)[0][0] == "The device disconnected."
    assert words(ended)[1][0] == "设备主动断开了连接。"


def test_a_lost_connection_is_logged(mqtt_broker):
    device = make_device()
    sock = socket.create_connection((mqtt_broker.host, mqtt_broker.port), timeout=3)
    sock.sendall(connect_packet(*credentials(device)))
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    sock.close()  # no DISCONNECT
    ended = wait_for_event(kind="disconnected", device=device)
    assert ended.code == "connection_lost"
    assert "DISCONNECT" in words(ended)[0][0]


def test_a_keep_alive_timeout_is_logged(mqtt_broker):
    device = make_device()
    with socket.create_connection((mqtt_broker.host, mqtt_broker.port), timeout=5) as sock:
        sock.sendall(connect_packet(*credentials(device), keepalive=1))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        assert sock.recv(1) == b""
    ended = wait_for_event(kind="disconnected", device=device)
    assert ended.code == "keepalive_timeout"
    assert "keep-alive" in words(ended)[0][0] and "保活" in words(ended)[1][0]


def test_a_takeover_is_logged_with_who_took_over(mqtt_broker, clients):
    device = make_device()
    first = connect(mqtt_broker, clients, credentials(device, client_id="first"))
    assert first.reason_code == 0
    second = connect(mqtt_broker, clients, credentials(device, client_id="second"))
    assert second.reason_code == 0
    ended = wait_for_event(kind="disconnected", device=device, client_id="first")
    assert ended.code == "taken_over"
    assert ended.taker_client_id == "second" and ended.taker_peer.startswith("127.0.0.1:")
    assert "took its place" in words(ended)[0][0] and "取代" in words(ended)[1][0]


@pytest.mark.parametrize("change, code, english", [
    ("disable", "kicked_disabled", "the device was disabled"),
    ("rotate", "kicked_secret_rotated", "secret was rotated"),
    ("delete", "kicked_deleted", "the device was deleted"),
])
def test_a_device_kicked_by_a_change_in_the_portal_is_logged(mqtt_broker, clients, change, code,
                                                            english):
    device = make_device()
    assert connect(mqtt_broker, clients, credentials(device)).reason_code == 0
    wait_for_event(kind="connected", device=device)
    if change == "disable":
        device.set_enabled(False)
    elif change == "rotate":
        device.rotate_secret()
    else:
        device.connection_events.all().delete()
        Device.objects.filter(pk=device.pk).delete()
    where = {"product_id": device.product_id} if change == "delete" else {"device": device}
    ended = wait_for_event(kind="disconnected", code=code, **where)
    assert english in words(ended)[0][0]


@pytest.mark.parametrize("qos, retain, code", [(2, False, "qos_not_supported"),
                                               (0, True, "retain_not_supported")])
def test_a_publish_breaking_the_profile_is_logged(mqtt_broker, clients, qos, retain, code):
    device = make_device()
    client = connect(mqtt_broker, clients, credentials(device))
    client.publish("/a1B2c3D4e5F/sensor-001/user/x", qos=qos, retain=retain)
    ended = wait_for_event(kind="disconnected", device=device, code=code)
    assert ("QoS 0 or 1" if qos == 2 else "retain") in words(ended)[0][1]


def test_a_broker_stopping_logs_the_end_of_its_sessions(mqtt_broker, clients):
    device = make_device()
    assert connect(mqtt_broker, clients, credentials(device)).reason_code == 0
    wait_for_event(kind="connected", device=device)
    mqtt_broker.restart()
    ended = wait_for_event(kind="disconnected", device=device)
    assert ended.code == "broker_shutdown"


# -- nothing secret in it -------------------------------------------------------------------------


def test_no_wrong_password_nor_the_secret_reaches_the_database_file_or_a_response(
        mqtt_broker, clients, client, member):
    from django.conf import settings
    from django.db import connection

    device = make_device()
    client_id, username, right = credentials(device)
    wrong = ["f00dfeed" * 8, right[:-6] + "abcdef", "P4ssw0rd-plain-text", right.upper()[:40]]
    for password in wrong:
        assert connect(mqtt_broker, clients, (client_id, username, password)).reason_code == 0x86
    # Written (and diagnosed) before the next refusal, which then has a flush, and so its
    # diagnosis budget, of its own: on a slow machine one diagnosis can use a flush's budget.
    wait_for_event(kind="refused", device=device, client_id=client_id.partition("|")[0],
                   count=len(wrong))
    old_secret = device.device_secret
    device.rotate_secret()
    # Another clientId, so that it is not folded into the row of the attempts before.
    client_id, username, right = credentials(device, client_id="dev-2", secret=old_secret)
    assert connect(mqtt_broker, clients, (client_id, username, right)).reason_code == 0x86
    wait_for_event(kind="refused", code="bad_signature", device=device, client_id="dev-2")
    time.sleep(0.6)  # the broker's last flush
    assert ConnectionEvent.objects.filter(device=device).count() >= 1

    client.force_login(member)
    responses = [
        client.get("/api/v1/products/a1B2c3D4e5F/devices/sensor-001/connections"),
        client.get("/api/v1/products/a1B2c3D4e5F/devices/sensor-001/connections",
                   HTTP_ACCEPT_LANGUAGE="zh-hans"),
        client.get("/products/a1B2c3D4e5F/devices/sensor-001/"),
        client.get("/products/a1B2c3D4e5F/"),
    ]
    assert "previous secret" in responses[0].content.decode()  # the log did diagnose them
    connection.close()  # let SQLite write everything to the main file
    database = Path(connection.settings_dict["NAME"])
    files = [database, *[Path(f"{database}{s}") for s in ("-wal", "-journal")]]
    blobs = [f.read_bytes() for f in files if f.exists()]
    blobs += [r.content for r in responses]
    blobs.append(mqtt_broker.log_path.read_bytes())
    secrets = [*wrong, right, old_secret, device.device_secret, right.lower()]
    for blob in blobs:
        for secret in secrets:
            assert secret.encode() not in blob
            assert secret.lower().encode() not in blob.lower()
    assert settings.CONNECTION_LOG
