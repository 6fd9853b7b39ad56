"""Message trace and send to device at the real embedded broker, with real paho clients."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from devices import message_trace
from devices.message_trace import MessageError
from devices.models import AuditEvent, DeviceMessage, DeviceSubscriptions, Trace, TraceMessage
from tests.broker_fixtures import MqttTestClient
from tests.test_broker import credentials, make_device

pytestmark = pytest.mark.broker


@pytest.fixture
def clients():
    opened = []
    yield opened
    for client in opened:
        client.close()


def connect(broker, clients, device, client_id="dev-1"):
    client = MqttTestClient(*credentials(device, client_id=client_id), host=broker.host,
                            port=broker.port)
    clients.append(client)
    assert client.connect() == 0
    return client


def traced(device, user=None, minutes=None):
    """Start a trace and wait until the broker has read it (it reads every 0.5 s)."""
    trace = message_trace.start_trace(device, user, minutes)
    time.sleep(message_trace.TRACE_REFRESH_S * 2 + 0.2)
    return trace


def wait_for_rows(trace, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(TraceMessage.objects.filter(trace=trace).order_by("id"))
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    return list(TraceMessage.objects.filter(trace=trace).order_by("id"))


def test_a_traced_device_s_publishes_and_deliveries_appear_in_order(mqtt_broker, clients, owner):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    topic_in = f"/{device.product.product_id}/{device.device_id}/down"
    topic_out = f"/{device.product.product_id}/{device.device_id}/up"
    assert client.subscribe(topic_in, qos=1) == 1
    trace = traced(device, owner)

    client.publish(topic_out, b'{"t": 21.5}', qos=1).wait_for_publish(3)
    answer = message_trace.send_to_device(device, topic_in, "hello device", 1, owner)
    assert answer["result"] == "acknowledged"
    client.publish(topic_out, b"\xff\x00\x01", qos=0).wait_for_publish(3)

    rows = wait_for_rows(trace, 3)
    shown = [message_trace.message_to_dict(row) for row in rows]
    assert [(m["direction"], m["topic"], m["qos"], m["size"], m["payload"], m["encoding"])
            for m in shown] == [
        ("from_device", topic_out, 1, 11, '{"t": 21.5}', "utf8"),
        ("to_device", topic_in, 1, 12, "hello device", "utf8"),
        ("from_device", topic_out, 0, 3, "ff0001", "hex"),
    ]
    assert client.wait_for_messages(1)[0].payload == b"hello device"
    assert message_trace.pretty(shown[0]["payload"], "utf8") == '{\n  "t": 21.5\n}'


def test_a_publish_outside_the_topic_space_is_traced_as_refused(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    trace = traced(device)
    client.publish("/elsewhere/x", b"lost", qos=0)
    rows = wait_for_rows(trace, 1)
    assert [(r.topic, r.refused) for r in rows] == [("/elsewhere/x", True)]


def test_an_untraced_device_produces_no_rows(mqtt_broker, clients):
    device = make_device()
    other = make_device(device_id="sensor-002")
    client = connect(mqtt_broker, clients, device)
    other_trace = traced(other)  # a trace of another device runs meanwhile
    for _ in range(20):
        client.publish(f"/{device.product.product_id}/{device.device_id}/up", b"x", qos=1)
    time.sleep(1.0)
    assert TraceMessage.objects.count() == 0
    assert Trace.objects.get(pk=other_trace.pk).message_count == 0


def test_a_trace_keeps_at_most_200_messages(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    trace = traced(device)
    topic = f"/{device.product.product_id}/{device.device_id}/up"
    for number in range(230):
        client.publish(topic, str(number).encode(), qos=0)
    client.publish(topic, b"last", qos=1).wait_for_publish(5)
    time.sleep(1.0)
    rows = list(TraceMessage.objects.filter(trace=trace).order_by("id"))
    assert len(rows) == 200
    assert bytes(rows[0].payload) == b"0" and bytes(rows[-1].payload) == b"199"
    assert Trace.objects.get(pk=trace.pk).message_count == 200


def test_an_expired_trace_records_nothing_more(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    trace = traced(device)
    Trace.objects.filter(pk=trace.pk).update(until=timezone.now() - timedelta(seconds=1))
    time.sleep(message_trace.TRACE_REFRESH_S * 2 + 0.2)
    client.publish(f"/{device.product.product_id}/{device.device_id}/up", b"late", qos=1)
    time.sleep(1.0)
    assert TraceMessage.objects.filter(trace=trace).count() == 0


def test_a_stopped_trace_records_nothing_more(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    trace = traced(device)
    message_trace.stop_trace(trace)
    client.publish(f"/{device.product.product_id}/{device.device_id}/up", b"after", qos=0)
    time.sleep(1.2)
    assert TraceMessage.objects.filter(trace=trace).count() == 0


def test_send_to_a_subscribed_device_at_qos_1_is_acknowledged_and_audited(mqtt_broker, clients, owner):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    topic = f"/sys/{device.product.product_id}/{device.device_id}/thing/service/set"
    assert client.subscribe(f"/sys/{device.product.product_id}/{device.device_id}/#", qos=1) == 1
    answer = message_trace.send_to_device(device, topic, '{"on": true}', 1, owner)
    assert answer["result"] == "acknowledged"
    received = client.wait_for_messages(1)
    assert (received[0].topic, received[0].payload, received[0].qos) == (topic, b'{"on": true}', 1)
    event = AuditEvent.objects.get(action="send_message")
    assert event.actor == owner and event.targets == [f"{device.product.product_id}/{device.device_id}"]
    assert '{"on"' not in event.detail  # the payload may be private


def test_send_at_qos_0_is_sent(mqtt_broker, clients, owner):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    topic = f"/{device.product.product_id}/{device.device_id}/down"
    client.subscribe(topic, qos=0)
    assert message_trace.send_to_device(device, topic, "x", 0, owner)["result"] == "sent"
    assert client.wait_for_messages(1)[0].payload == b"x"


def test_send_to_a_disconnected_device_says_so(mqtt_broker, owner):
    device = make_device()
    answer = message_trace.send_to_device(
        device, f"/{device.product.product_id}/{device.device_id}/down", "x", 1, owner)
    assert answer["result"] == "not_connected"
    assert DeviceMessage.objects.get().result == "not_connected"


def test_send_without_a_matching_subscription_names_the_subscriptions(mqtt_broker, clients, owner):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    mine = f"/{device.product.product_id}/{device.device_id}/config/+"
    assert client.subscribe(mine, qos=1) == 1
    answer = message_trace.send_to_device(
        device, f"/{device.product.product_id}/{device.device_id}/down", "x", 1, owner)
    assert answer["result"] == "no_subscription"
    assert answer["subscriptions"] == [{"topic": mine, "qos": 1}]
    assert client.messages == []


def test_a_topic_outside_the_space_is_refused_naming_the_field_and_the_spaces(mqtt_broker, owner):
    device = make_device()
    with pytest.raises(MessageError) as refused:
        message_trace.send_to_device(device, "/other/thing", "x", 0, owner)
    assert refused.value.field == "topic" and refused.value.status == 400
    assert f"/sys/{device.product.product_id}/{device.device_id}/" in refused.value.message
    assert f"/{device.product.product_id}/{device.device_id}/" in refused.value.message
    assert DeviceMessage.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_the_device_s_subscriptions_are_recorded_while_it_is_connected(mqtt_broker, clients):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    first = f"/{device.product.product_id}/{device.device_id}/a"
    second = f"/sys/{device.product.product_id}/{device.device_id}/#"
    client.subscribe(first, qos=0)
    client.subscribe(second, qos=1)
    client.subscribe("/not/mine", qos=1)  # refused: never listed

    def current():
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            row = DeviceSubscriptions.objects.filter(device=device).first()
            seen = sorted(tuple(f) for f in row.filters) if row else []
            if seen == expected:
                return seen
            time.sleep(0.05)
        return seen

    expected = sorted([(first, 0), (second, 1)])
    assert current() == expected
    client.client.unsubscribe(first)
    expected = [(second, 1)]
    assert current() == expected
    client.close()
    expected = []
    assert current() == expected


def test_the_feature_switched_off_the_broker_records_nothing(mqtt_broker, clients):
    """The benchmark's baseline: PORTAL_MESSAGE_TRACE=0 leaves the broker as it was."""
    from tests.broker_fixtures import BrokerProcess, free_port

    off = BrokerProcess(**{**mqtt_broker.__dict__, "port": free_port(), "tls_port": free_port(),
                           "process": None, "extra_env": {"PORTAL_MESSAGE_TRACE": "0"}})
    off.start()
    try:
        device = make_device()
        client = connect(off, clients, device)
        trace = traced(device)
        client.publish(f"/{device.product.product_id}/{device.device_id}/up", b"x", qos=1)
        time.sleep(1.0)
        assert TraceMessage.objects.filter(trace=trace).count() == 0
    finally:
        off.stop()


def test_json_payloads_are_pretty_printed_and_cut_utf8_stays_text():
    assert message_trace.pretty('{"a":[1,2]}', "utf8") == json.dumps({"a": [1, 2]}, indent=2)
    text = "温" * 400  # 1200 bytes: the first 1 KiB ends inside a character
    data = text.encode()[:1024]
    payload, encoding = message_trace.decode_payload(data, 1200)
    assert encoding == "utf8" and payload == "温" * 341


class SilentSubscriber:
    """A raw MQTT 3.1.1 client on a plain socket: it connects, subscribes and then only reads;
    it never answers a PUBLISH with a PUBACK (paho always does, so it cannot play this part)."""

    def __init__(self, broker, device, client_id="dev-1"):
        import socket
        import threading

        self.packets = []  # (first byte, body) of every packet after the SUBACK
        mqtt_client_id, username, password = credentials(device, client_id=client_id)
        self.sock = socket.create_connection((broker.host, broker.port), timeout=5)
        connect = (b"\x00\x04MQTT\x04\xc2\x00\x3c" + self._text(mqtt_client_id)
                   + self._text(username) + self._text(password))
        self.sock.sendall(self._packet(0x10, connect))
        first, body = self._read()
        assert (first, body[1:]) == (0x20, b"\x00"), f"CONNACK {first:#x} {body!r}"
        self._reader = None
        self._threading = threading

    @staticmethod
    def _text(value):
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    @staticmethod
    def _packet(first, body):
        length, encoded = len(body), b""
        while True:
            byte, length = length % 128, length // 128
            encoded += bytes([byte | (0x80 if length else 0)])
            if not length:
                return bytes([first]) + encoded + body

    def _exactly(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def _read(self):
        first = self._exactly(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._exactly(1)[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, self._exactly(length)

    def subscribe(self, topic_filter, qos):
        self.sock.sendall(self._packet(0x82, b"\x00\x01" + self._text(topic_filter) + bytes([qos])))
        first, body = self._read()
        assert (first, body[:2]) == (0x90, b"\x00\x01"), f"SUBACK {first:#x} {body!r}"
        self._reader = self._threading.Thread(target=self._read_forever, daemon=True)
        self._reader.start()
        return body[2]

    def _read_forever(self):
        self.sock.settimeout(None)  # close() shuts the socket down, which ends the read
        while True:
            try:
                self.packets.append(self._read())
            except OSError:
                return

    def publishes(self):
        """(topic, qos, packet id, payload) of the PUBLISH packets received."""
        found = []
        for first, body in self.packets:
            if first >> 4 != 3:
                continue
            qos = (first >> 1) & 3
            size = int.from_bytes(body[:2], "big")
            topic, rest = body[2:2 + size].decode(), body[2 + size:]
            packet_id = int.from_bytes(rest[:2], "big") if qos else None
            found.append((topic, qos, packet_id, rest[2:] if qos else rest))
        return found

    def close(self):
        import socket

        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._reader is not None:
            self._reader.join(2)
        self.sock.close()


def test_send_at_qos_1_to_a_device_that_never_pubacks_is_sent_not_acknowledged(mqtt_broker, owner):
    device = make_device()
    topic = f"/{device.product.product_id}/{device.device_id}/down"
    silent = SilentSubscriber(mqtt_broker, device)
    try:
        assert silent.subscribe(topic, 1) == 1
        mark = mqtt_broker.log_mark()
        started = time.monotonic()
        answer = message_trace.send_to_device(device, topic, "are you there?", 1, owner)
        waited = time.monotonic() - started
        assert answer["result"] == "sent"
        assert "PUBACK" in answer["message"] and "QoS 0" not in answer["message"]
        assert waited >= message_trace.PUBACK_WAIT_S  # it waited for the PUBACK first
        mqtt_broker.wait_for_log(mark, "sent no PUBACK")
        # the device did get it, at QoS 1 with a packet id, and answered nothing
        [(got_topic, qos, packet_id, payload)] = silent.publishes()
        assert (got_topic, qos, payload) == (topic, 1, b"are you there?") and packet_id
        assert DeviceMessage.objects.get().result == "sent"
    finally:
        silent.close()


def test_send_at_qos_1_to_a_qos_0_subscription_is_sent_and_says_why(mqtt_broker, clients, owner):
    device = make_device()
    client = connect(mqtt_broker, clients, device)
    topic = f"/{device.product.product_id}/{device.device_id}/down"
    assert client.subscribe(topic, qos=0) == 0
    answer = message_trace.send_to_device(device, topic, "x", 1, owner)
    assert answer["result"] == "sent"
    assert "subscribed at QoS 0" in answer["message"]
    assert client.wait_for_messages(1)[0].qos == 0
