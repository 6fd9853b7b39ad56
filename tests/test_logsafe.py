"""Client values in log lines cannot forge a line, hide text or flood the log (devices.logsafe).

Values that arrive from a socket or a hook's body (peerhost, clientId, username, topic) carry
"\\n" (a forged line), "\\x1b[" (a terminal escape) and U+202E (text turned around); the log must
show them escaped, on the one line they belong to, and cut when very long."""

import ast
import json
import logging
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.harness import connect_packet
from devices import logsafe, signing
from devices.logsafe import shown
from devices.options import ConnectionOptions
from tests.broker_fixtures import MqttTestClient

FORGED = "1999-01-01 00:00:00,000 WARNING broker.hooks: FORGED"
HOSTILE = f"dev\n{FORGED}\x1b[31m\u202e\u200b\ufeff\r"
TOKEN = "hook-token-for-tests"


# -- the helper ---------------------------------------------------------------------------------


def logged(message, *args):
    """What a logger call makes of ``message`` and ``args`` (logging's own %-formatting)."""
    return logging.LogRecord("test", logging.WARNING, __file__, 0, message, args, None).getMessage()



@pytest.mark.parametrize(
    "value, as_repr, as_str",
    [
        ("a\nb", r"'a\nb'", r"a\nb"),
        ("a\r\nb", r"'a\r\nb'", r"a\r\nb"),
        ("\x1b[31mred", r"'\x1b[31mred'", r"\x1b[31mred"),
        ("abc\u202efdp", r"'abc\u202efdp'", r"abc\u202efdp"),
        ("\u200bx\ufeff", r"'\u200bx\ufeff'", r"\u200bx\ufeff"),
        ("\x85\u2028\u2029\x00", r"'\x85\u2028\u2029\x00'", r"\x85\u2028\u2029\x00"),
        ("温度计-01 ok", "'温度计-01 ok'", "温度计-01 ok"),
    ],
)
def test_a_value_is_shown_escaped_with_r_and_with_s(value, as_repr, as_str):
    assert logged("%r", shown(value)) == as_repr
    assert logged("%s", shown(value)) == as_str


def test_printable_text_composed_by_the_portal_is_left_as_it_is_with_s():
    reason = r"Extension parameter 'a\nb' is not of the form key=value."
    assert str(shown(reason, limit=logsafe.MAX_TEXT_CHARS)) == reason


def test_a_long_value_is_cut_and_the_cut_is_said():
    value = "x" * 10_000
    assert repr(shown(value)) == repr("x" * 200) + "…[9800 more characters]"
    assert str(shown(value, limit=10)) == "x" * 10 + "…[9990 more characters]"


def test_none_and_other_values():
    assert logged("%r %s", shown(None), shown(None)) == "None None"
    assert logged("%s", shown(ValueError("bad\nthing"))) == r"bad\nthing"
    assert logged("%r", shown(b"\n")) == r"b'\n'"


@given(st.text(max_size=logsafe.MAX_VALUE_CHARS))
def test_every_text_is_shown_printable_and_reads_back_exactly(text):
    as_repr, as_str = repr(shown(text)), str(shown(text))
    assert as_repr.isprintable() and as_str.isprintable()
    assert ast.literal_eval(as_repr) == text  # unambiguous: the repr gives back the value


# -- the EMQX hooks -----------------------------------------------------------------------------


def log_lines(caplog):
    return caplog.text.splitlines()


def assert_not_forged(text):
    """No line of ``text`` starts with the forged entry, and nothing invisible reached it."""
    assert not any(line.startswith("1999-01-01") for line in text.splitlines())
    for char in ("\x1b", "\u202e", "\u200b", "\ufeff", "\r"):
        assert char not in text


def hook(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def test_the_auth_hook_logs_hostile_values_escaped_on_one_line(client, device, settings, caplog):
    settings.BROKER_HOOK_TOKEN = TOKEN
    body = {"clientid": HOSTILE + "|securemode=3|", "username": HOSTILE + "&a1B2c3D4e5F",
            "password": "x", "peerhost": "10.0.0.7\n" + FORGED}
    with caplog.at_level("WARNING", logger="broker.hooks"):
        assert hook(client, "/mqtt/auth", body).json()["result"] == "deny"
    [record] = [r for r in caplog.records if r.name == "broker.hooks"]
    message = record.getMessage()
    assert "\n" not in message
    assert_not_forged(caplog.text)
    assert message.startswith("Hook refused CONNECT from 10.0.0.7\\n1999-01-01")
    assert r"mqttClientId 'dev\n1999-01-01" in message
    assert r"\x1b[31m\u202e\u200b\ufeff\r" in message


def test_the_acl_hook_logs_a_hostile_topic_escaped_and_cut(client, device, settings, caplog):
    settings.BROKER_HOOK_TOKEN = TOKEN
    # /mqtt/acl judges the topic only for a session /mqtt/auth accepted (issue 9): accept one.
    params = device.connection_params(ConnectionOptions(securemode=3))
    accepted = hook(client, "/mqtt/auth", {"clientid": params["mqttClientId"],
                                           "username": params["mqttUsername"],
                                           "password": params["mqttPassword"]})
    assert accepted.json()["result"] == "allow"
    topic = "/elsewhere/" + HOSTILE + "y" * 5000
    body = {"clientid": params["mqttClientId"], "username": "sensor-001&a1B2c3D4e5F",
            "action": "publish", "topic": topic, "qos": 0, "retain": False}
    with caplog.at_level("WARNING", logger="broker.hooks"):
        assert hook(client, "/mqtt/acl", body).json()["result"] == "deny"
    [record] = [r for r in caplog.records if r.name == "broker.hooks"]
    message = record.getMessage()
    assert "\n" not in message and len(message) < 1000
    assert_not_forged(caplog.text)
    assert r"'/elsewhere/dev\n1999-01-01" in message and "more characters]" in message
    assert "outside the device's topic space" in message


# -- the embedded broker ------------------------------------------------------------------------


def raw_connect(broker, client_id, username, password="x"):
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(connect_packet(client_id, username, password))
        return sock.recv(4)


@pytest.mark.broker
def test_a_hostile_connect_is_logged_escaped_on_one_bounded_line(mqtt_broker):
    mark = mqtt_broker.log_mark()
    client_id = HOSTILE + "z" * 5000 + "|securemode=3|"
    assert raw_connect(mqtt_broker, client_id, HOSTILE + "&pk") == b"\x20\x02\x00\x02"
    log = mqtt_broker.wait_for_log(mark, "Refused CONNECT")
    assert_not_forged(log)
    [line] = [line for line in log.splitlines() if "Refused CONNECT" in line]
    assert r"(mqttClientId 'dev\n1999-01-01" in line
    assert r"\x1b[31m\u202e\u200b\ufeff\r" in line
    assert "more characters]" in line and len(line) < 2000


@pytest.mark.broker
def test_a_refused_subscription_to_a_hostile_topic_is_logged_escaped(mqtt_broker):
    from devices.models import Device, Product

    product = Product.objects.create(product_id="log-product", name="Logs")
    Device.objects.create(product=product, device_id="log-001", device_secret="s3cret")
    fields = signing.render("log-product", "log-001", "s3cret", client_id="log-001", securemode=3,
                            signmethod="hmacsha256", timestamp=None)
    client = MqttTestClient(fields.mqtt_client_id, fields.mqtt_username, fields.mqtt_password,
                            host=mqtt_broker.host, port=mqtt_broker.port)
    try:
        assert client.connect() == 0
        mark = mqtt_broker.log_mark()
        topic = "/other/" + HOSTILE.replace("\x00", "") + "t" * 3000
        assert client.subscribe(topic) == 0x80
        log = mqtt_broker.wait_for_log(mark, "Refused subscribe")
    finally:
        client.close()
    time.sleep(0.1)
    assert_not_forged(log)
    [line] = [line for line in log.splitlines() if "Refused subscribe" in line]
    assert r"'/other/dev\n1999-01-01" in line and "more characters]" in line
    assert len(line) < 2000
