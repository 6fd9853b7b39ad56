"""The platform's session rules on EMQX, played from the README's configuration (issue 9, items 1
and 11): no rights without the portal's authentication, takeover by device, exclusive."""

import json
from datetime import datetime

import pytest

from devices.models import Device, DeviceStatus
from devices.options import ConnectionOptions
from tests.emqx_player import Emqx, ListenerClosed, NotAuthorized

TOKEN = "emqx-sessions-test-token"
UP = "/a1B2c3D4e5F/sensor-001/user/update"


@pytest.fixture(autouse=True)
def hook_token(settings):
    settings.BROKER_HOOK_TOKEN = TOKEN
    settings.MQTT_AUTH_CACHE_MS = 0


@pytest.fixture
def emqx(client, db):
    return Emqx(client, TOKEN)


def credentials(device, **options):
    params = device.connection_params(ConnectionOptions(securemode=3, **options))
    return params["mqttClientId"], params["mqttUsername"], params["mqttPassword"]


def status(device):
    return Device.objects.get(pk=device.pk).status


# -- item 1: nobody gets a device's rights without the portal's authentication -------------------


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_the_websocket_listeners_are_closed(emqx, device, kind):
    client_id, username, _ = credentials(device)
    with pytest.raises(ListenerClosed):
        emqx.connect(kind, client_id, username, "any password")


@pytest.mark.parametrize("kind", ["tcp", "ssl", "ws", "wss"])
def test_every_open_listener_authenticates_through_the_portal(emqx, kind):
    if emqx.listener_enabled(kind):
        assert emqx.authenticators(kind), f"listener {kind} admits anonymous clients"


def test_a_wrong_password_gets_no_session(emqx, device):
    client_id, username, _ = credentials(device)
    with pytest.raises(NotAuthorized):
        emqx.connect("tcp", client_id, username, "0" * 64)


def test_acl_denies_a_device_username_the_portal_never_authenticated(client, device):
    """An anonymous client (a listener without authenticator) naming the device's username."""
    _, username, _ = credentials(device)
    for client_id in (username, "sensor-001|securemode=3|", "anything"):
        body = {"clientid": client_id, "username": username, "peerhost": "198.51.100.7",
                "action": "publish", "topic": UP, "qos": "1", "retain": "false"}
        response = client.post("/mqtt/acl", data=json.dumps(body), content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.json() == {"result": "deny"}


def test_acl_denies_another_address_while_the_device_is_connected(client, emqx, device):
    session = emqx.connect("tcp", *credentials(device), peerhost="192.0.2.10")
    assert emqx.authorize(session, "publish", UP) == "allow"
    body = {"clientid": session.clientinfo["clientid"], "username": session.clientinfo["username"],
            "peerhost": "198.51.100.7", "action": "publish", "topic": UP, "qos": "1",
            "retain": "false"}
    response = client.post("/mqtt/acl", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.json() == {"result": "deny"}


def test_a_connection_the_portal_never_authenticated_does_not_change_the_status(emqx, device):
    """What an anonymous WebSocket client would make EMQX send: its connect must not mark the
    device online, its disconnect must not mark it offline."""
    from tests.emqx_player import Session

    _, username, _ = credentials(device)
    stranger = Session({"clientid": username, "username": username, "peerhost": "198.51.100.7",
                        "client_attrs": {}}, "198.51.100.7:40000", emqx._tick())
    emqx.event("client.connected", stranger)
    assert status(device) == DeviceStatus.INACTIVE
    real = emqx.connect("tcp", *credentials(device))
    emqx.event("client.disconnected", stranger, "normal")
    assert status(device) == DeviceStatus.ONLINE
    assert emqx.authorize(real, "publish", UP) == "allow"


def test_rights_end_with_the_session(emqx, device):
    session = emqx.connect("tcp", *credentials(device))
    assert emqx.authorize(session, "subscribe", "/sys/a1B2c3D4e5F/sensor-001/#") == "allow"
    emqx.disconnect(session)
    assert emqx.authorize(session, "subscribe", "/sys/a1B2c3D4e5F/sensor-001/#") == "deny"
    assert status(device) == DeviceStatus.OFFLINE


def test_rights_hold_before_the_connected_event_arrives(emqx, device, client):
    """EMQX's webhook is asynchronous: a SUBSCRIBE right after CONNECT may be authorized before
    the portal has heard of the connection."""
    client_id, username, password = credentials(device)
    info = emqx.clientinfo(client_id, username, "192.0.2.10")
    authenticator = emqx.authenticators("tcp")[0]
    from tests.emqx_player import Session, render

    response = emqx._send(authenticator["method"], authenticator["url"], authenticator["headers"],
                          render(authenticator["body"], {**info, "password": password}))
    assert response.json()["result"] == "allow"
    assert emqx.authorize(Session(info, "192.0.2.10:1", 0), "publish", UP) == "allow"


# -- item 11: takeover by device, exclusive ------------------------------------------------------


def test_emqx_gives_every_device_one_client_id(emqx):
    assert emqx.config.get("mqtt.clientid_override") == "username"
    attrs = emqx.config.get("mqtt.client_attrs_init")
    assert [(a["expression"], a["set_as_attr"]) for a in attrs] == [("clientid", "mqtt_clientid")]
    for kind in ("tcp", "ssl"):
        assert emqx.authenticators(kind)[0]["body"]["clientid"] == "${client_attrs.mqtt_clientid}"


@pytest.mark.parametrize("events", ["connected first", "disconnected first"])
def test_a_reconnect_with_a_new_timestamp_takes_over_and_stays_online(emqx, device, events):
    first = emqx.connect("tcp", *credentials(device, timestamp=1900000000000))
    second = emqx.connect("tcp", *credentials(device, timestamp=1900000060000), events=events)
    assert not first.alive and list(emqx.sessions.values()) == [second]
    assert status(device) == DeviceStatus.ONLINE
    assert emqx.authorize(second, "publish", UP) == "allow"


def test_another_client_id_of_the_same_device_takes_over(emqx, device):
    first = emqx.connect("tcp", *credentials(device, client_id="mac-0001"))
    second = emqx.connect("tcp", *credentials(device, client_id="serial-77"))
    assert not first.alive and second.alive
    assert status(device) == DeviceStatus.ONLINE


def test_an_exclusive_session_refuses_newcomers_until_it_leaves(emqx, device):
    holder = emqx.connect("tcp", *credentials(device, client_id="mac-0001", exclusive=True))
    for options in ({"client_id": "serial-77"}, {"client_id": "mac-0001", "exclusive": True}):
        with pytest.raises(NotAuthorized):
            emqx.connect("tcp", *credentials(device, **options))
    assert holder.alive and emqx.authorize(holder, "publish", UP) == "allow"
    emqx.disconnect(holder)
    assert emqx.connect("tcp", *credentials(device, client_id="serial-77")).alive


def test_the_exclusive_refusal_is_logged_with_its_reason(emqx, device, caplog):
    emqx.connect("tcp", *credentials(device, exclusive=True))
    with pytest.raises(NotAuthorized):
        emqx.connect("tcp", *credentials(device))
    assert "exclusive_connection" in caplog.text


def test_a_non_exclusive_holder_is_replaced_by_an_exclusive_newcomer(emqx, device):
    first = emqx.connect("tcp", *credentials(device))
    second = emqx.connect("tcp", *credentials(device, exclusive=True))
    assert not first.alive and second.alive
    with pytest.raises(NotAuthorized):
        emqx.connect("tcp", *credentials(device))


def test_a_refused_connect_leaves_the_connected_session_alone(emqx, device):
    session = emqx.connect("tcp", *credentials(device))
    with pytest.raises(NotAuthorized):
        emqx.connect("tcp", credentials(device)[0], credentials(device)[1], "0" * 64)
    assert session.alive and emqx.authorize(session, "publish", UP) == "allow"


def test_authorization_gives_up_after_five_seconds(emqx):
    timeout = emqx.config.get("authorization.sources")[0]["request_timeout"]
    start = datetime(2000, 1, 1)
    assert (start + timeout - start).total_seconds() == 5


def test_a_session_signed_with_the_old_secret_loses_its_rights_at_once(emqx, device):
    session = emqx.connect("tcp", *credentials(device))
    Device.objects.get(pk=device.pk).rotate_secret()
    assert emqx.authorize(session, "publish", UP) == "deny"
    assert emqx.connect("tcp", *credentials(Device.objects.get(pk=device.pk))).alive


def test_an_exclusive_holder_with_the_old_secret_does_not_block_the_new_one(emqx, device):
    holder = emqx.connect("tcp", *credentials(device, exclusive=True))
    rotated = Device.objects.get(pk=device.pk)
    rotated.rotate_secret()  # the holder is being kicked (no EMQX API here: it stays connected)
    newcomer = emqx.connect("tcp", *credentials(rotated, exclusive=True))
    assert not holder.alive and newcomer.alive


def test_the_accepted_connect_is_recorded_with_what_the_hook_knows(emqx, device):
    from devices.models import BrokerSession

    client_id, username, password = credentials(device, exclusive=True)
    emqx.connect("tcp", client_id, username, password, peerhost="192.0.2.44")
    session = BrokerSession.objects.get()
    assert (session.client_id, session.broker_client_id, session.username) == (
        client_id, username, username)
    assert session.peerhost == "192.0.2.44" and session.peername.startswith("192.0.2.44:")
    assert session.exclusive and session.connected_at is not None


@pytest.mark.parametrize("field", ["peerhost", "broker_clientid"])
def test_a_nul_in_a_recorded_value_is_no_500(client, device, field):
    client_id, username, password = credentials(device)
    body = {"clientid": client_id, "username": username, "password": password,
            "peerhost": "192.0.2.10", "broker_clientid": username, "transport": "tcp"}
    body[field] = "192.0.2.10\x00evil"
    response = client.post("/mqtt/auth", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
