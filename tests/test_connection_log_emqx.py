"""The connection log from EMQX: the requests EMQX builds from the README's configuration
(played by tests/emqx_player.py, as tests/test_emqx_config.py does) leave their rows, with
broker = emqx."""

import pytest
from django.utils import translation

from devices import connection_log
from devices.models import ConnectionEvent
from devices.options import ConnectionOptions
from tests.emqx_player import Emqx, NotAuthorized

TOKEN = "emqx-connection-log-test-token"


@pytest.fixture(autouse=True)
def hook_token(settings):
    settings.BROKER_HOOK_TOKEN = TOKEN
    settings.MQTT_AUTH_CACHE_MS = 0


@pytest.fixture
def emqx(client):
    return Emqx(client, TOKEN)


@pytest.fixture(autouse=True)
def empty_buffer(db):
    connection_log.flush()
    yield
    connection_log.flush()


def fields(device, securemode):
    params = device.connection_params(ConnectionOptions(securemode=securemode))
    return params["mqttClientId"], params["mqttUsername"], params["mqttPassword"]


def test_a_refusal_at_mqtt_auth_is_logged_and_diagnosed(emqx, device, settings):
    settings.MQTT_TLS_PORT = 8883
    client_id, username, password = fields(device, 2)  # securemode=2 sent to the plain TCP port
    with pytest.raises(NotAuthorized):
        emqx.connect("tcp", client_id, username, password)
    connection_log.flush()
    event = ConnectionEvent.objects.get(device=device)
    assert (event.kind, event.broker, event.code, event.connack) == (
        "refused", "emqx", "securemode_mismatch", 5)
    assert (event.peer, event.transport) == ("192.0.2.10", "tcp")
    assert "securemode=2" in event.hint and "plain TCP" in event.hint
    with translation.override("zh-hans"):
        assert event.reason == "securemode 与设备连接的端口不符。"
    assert password not in repr(list(ConnectionEvent.objects.values()))


def test_an_accepted_connect_is_logged_when_emqx_says_connected(emqx, device):
    client_id, username, password = fields(device, 3)
    emqx.connect("tcp", client_id, username, password)
    connection_log.flush()
    connected = ConnectionEvent.objects.get(device=device)
    assert (connected.kind, connected.broker, connected.code, connected.protocol) == (
        "connected", "emqx", "accepted", "3.1.1")
    assert connected.client_id == "sensor-001"  # the device's own, not EMQX's overridden id


@pytest.mark.parametrize("reason, code", [
    ("normal", "client_disconnect"), ("keepalive_timeout", "keepalive_timeout"),
    ("discarded", "discarded"), ("kicked", "kicked"),
    ("sock_closed", "connection_lost"), ("something_new", "unknown"), (None, "unknown"),
])
def test_a_session_from_the_webhook_is_logged_with_emqx_reason(emqx, device, reason, code):
    session = emqx.connect("tcp", *fields(device, 3))
    emqx.clock_ms += 42_000
    emqx.disconnect(session, reason)
    connection_log.flush()
    ended = ConnectionEvent.objects.get(device=device, kind="disconnected")
    assert (ended.broker, ended.code, ended.peer) == ("emqx", code, session.peername)
    assert 42 <= ended.session_seconds <= 43  # from the portal's record of when it connected
    with translation.override("en"):
        english = ended.reason
    with translation.override("zh-hans"):
        assert ended.reason != english


def test_a_takeover_by_a_reconnect_of_the_device_is_logged(emqx, device):
    first = emqx.connect("tcp", *fields(device, 3))
    second = emqx.connect("tcp", *fields(device, 3), peerhost="192.0.2.11")  # takes it over
    connection_log.flush()
    ended = ConnectionEvent.objects.get(device=device, kind="disconnected")
    assert (ended.code, ended.peer) == ("taken_over", first.peername)
    assert (ended.taker_peer, ended.taker_client_id) == (second.peername, "sensor-001")


@pytest.mark.parametrize("reason", [{"shutdown": "tcp_closed"}, ["normal"], 7, None, True])
def test_a_reason_that_is_not_a_string_is_unknown(reason):
    from broker.connection_events import disconnect_code

    assert disconnect_code(reason) == "unknown"
