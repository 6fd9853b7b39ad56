"""The connection log from EMQX: the requests EMQX builds from the README's configuration
(as tests/test_emqx_config.py plays them) leave their rows, with broker = emqx."""

import re

import pytest
from django.utils import translation
from pyhocon import ConfigFactory

from devices import connection_log
from devices.models import ConnectionEvent
from tests.test_emqx_config import README, TOKEN, connect_values, render, send


@pytest.fixture(scope="module")
def emqx():
    block = re.search(r"```hocon\n(.*?)```", README.read_text(), re.S)
    return ConfigFactory.parse_string(block.group(1), resolve=False)


@pytest.fixture(autouse=True)
def hook_token(settings):
    settings.BROKER_HOOK_TOKEN = TOKEN


@pytest.fixture(autouse=True)
def empty_buffer(db):
    connection_log.flush()
    yield
    connection_log.flush()


def authenticate(client, emqx, values, listener="tcp"):
    authenticator = emqx.get(f"listeners.{listener}.default.authentication")[0]
    response = send(client, authenticator["method"], authenticator["url"],
                    authenticator["headers"], render(authenticator["body"], values))
    assert response.status_code == 200
    return response.json()["result"]


def webhook(client, emqx, event):
    rule = emqx.get("rule_engine.rules.portal_status")
    action = emqx.get(f"actions.http.{rule['actions'][0].split(':', 1)[1]}")
    connector = emqx.get(f"connectors.http.{action['connector']}")
    parameters = action["parameters"]
    headers = {**connector["headers"], **parameters.get("headers", {})}
    response = send(client, parameters["method"], connector["url"].rstrip("/") + parameters["path"],
                    headers, render(parameters["body"], event))
    assert response.status_code == 204


def test_a_refusal_at_mqtt_auth_is_logged_and_diagnosed(client, emqx, device, settings):
    settings.MQTT_TLS_PORT = 8883
    values = connect_values(device, 2)  # securemode=2 sent to the plain TCP listener
    assert authenticate(client, emqx, values) == "deny"
    connection_log.flush()
    event = ConnectionEvent.objects.get(device=device)
    assert (event.kind, event.broker, event.code, event.connack) == (
        "refused", "emqx", "securemode_mismatch", 5)
    assert (event.peer, event.transport) == ("192.0.2.10", "tcp")
    assert "securemode=2" in event.hint and "plain TCP" in event.hint
    with translation.override("zh-hans"):
        assert event.reason == "securemode 与设备连接的端口不符。"
    assert values["password"] not in repr(list(ConnectionEvent.objects.values()))


def test_an_accepted_auth_is_not_logged_until_emqx_says_connected(client, emqx, device):
    assert authenticate(client, emqx, connect_values(device, 3)) == "allow"
    connection_log.flush()
    assert not ConnectionEvent.objects.exists()


@pytest.mark.parametrize("reason, code", [
    ("normal", "client_disconnect"), ("keepalive_timeout", "keepalive_timeout"),
    ("takenover", "taken_over"), ("discarded", "discarded"), ("kicked", "kicked"),
    ("sock_closed", "connection_lost"), ("something_new", "unknown"), (None, "unknown"),
])
def test_a_session_from_the_webhook_is_logged_with_emqx_reason(client, emqx, device, reason, code):
    identity = connect_values(device, 3)
    base = {"clientid": identity["clientid"], "username": identity["username"],
            "peername": "192.0.2.10:50000", "proto_ver": 4}
    webhook(client, emqx, {**base, "event": "client.connected", "connected_at": 1_900_000_000_000})
    disconnected = {**base, "event": "client.disconnected", "disconnected_at": 1_900_000_042_000,
                    "connected_at": 1_900_000_000_000}
    if reason is not None:
        disconnected["reason"] = reason
    webhook(client, emqx, disconnected)
    connection_log.flush()
    connected, ended = (ConnectionEvent.objects.get(device=device, kind=kind)
                        for kind in ("connected", "disconnected"))
    assert (connected.broker, connected.code, connected.protocol) == ("emqx", "accepted", "3.1.1")
    assert connected.client_id == "sensor-001"
    assert (ended.code, ended.session_seconds, ended.peer) == (code, 42, "192.0.2.10:50000")
    with translation.override("en"):
        english = ended.reason
    with translation.override("zh-hans"):
        assert ended.reason != english


@pytest.mark.parametrize("reason", [{"shutdown": "tcp_closed"}, ["normal"], 7, None, True])
def test_a_reason_that_is_not_a_string_is_unknown(reason):
    from broker.connection_events import disconnect_code

    assert disconnect_code(reason) == "unknown"
