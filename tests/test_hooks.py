"""The EMQX hooks, called with EMQX-shaped JSON (INTERFACES.md, /mqtt/*)."""

import json

import pytest

from devices.models import Device, DeviceStatus

TOKEN = "hook-token-for-tests"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
# From tests/data/signing.json, "hmacmd5 over TLS" (device sensor-001 of a1B2c3D4e5F).
TLS_CLIENT_ID = "sensor-001|securemode=2,signmethod=hmacmd5,timestamp=1700000000000|"
TLS_PASSWORD = "58c5baa880bf50e122f5eef89653e878"
USERNAME = "sensor-001&a1B2c3D4e5F"


@pytest.fixture(autouse=True)
def hook_token(settings):
    settings.BROKER_HOOK_TOKEN = TOKEN
    settings.MQTT_AUTH_CACHE_MS = 0


def post(client, path, body, **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **{**AUTH, **headers})


def auth_body(**overrides):
    body = {"clientid": TLS_CLIENT_ID, "username": USERNAME, "password": TLS_PASSWORD,
            "peerhost": "10.0.0.7", "transport": "tls"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def acl_body(**overrides):
    body = {"clientid": TLS_CLIENT_ID, "username": USERNAME, "action": "publish",
            "topic": "/a1B2c3D4e5F/sensor-001/up", "qos": "1", "retain": "false"}
    body.update(overrides)
    return body


# -- /mqtt/auth ----------------------------------------------------------------------------------


def test_auth_allows_a_correctly_signed_device(client, device):
    response = post(client, "/mqtt/auth", auth_body())
    assert response.status_code == 200
    assert response.json() == {"result": "allow", "is_superuser": False}


def test_auth_allows_without_transport_when_the_listener_does_not_say(client, device):
    assert post(client, "/mqtt/auth", auth_body(transport=None)).json()["result"] == "allow"


def test_auth_denies_a_securemode_that_does_not_match_the_transport(client, device):
    assert post(client, "/mqtt/auth", auth_body(transport="tcp")).json()["result"] == "deny"


def test_auth_denies_a_wrong_password_and_logs_why_without_it(client, device, caplog):
    response = post(client, "/mqtt/auth", auth_body(password="0" * 32))
    assert response.json() == {"result": "deny", "is_superuser": False}
    assert "bad_signature" in caplog.text
    assert "0" * 32 not in caplog.text and device.device_secret not in caplog.text


def test_auth_denies_a_disabled_device(client, device):
    Device.objects.filter(pk=device.pk).update(enabled=False)
    assert post(client, "/mqtt/auth", auth_body()).json()["result"] == "deny"


def test_auth_denies_an_unknown_device(client, db):
    assert post(client, "/mqtt/auth", auth_body()).json()["result"] == "deny"


# -- /mqtt/acl ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action, topic, qos",
    [("publish", "/a1B2c3D4e5F/sensor-001/up", "1"),
     ("publish", "/sys/a1B2c3D4e5F/sensor-001/thing/event/post", 0),
     ("subscribe", "/sys/a1B2c3D4e5F/sensor-001/#", "2"),
     ("subscribe", "/a1B2c3D4e5F/sensor-001/+/down", 1)],
)
def test_acl_allows_inside_the_devices_space(client, device, action, topic, qos):
    assert post(client, "/mqtt/auth", auth_body()).json()["result"] == "allow"  # a session
    response = post(client, "/mqtt/acl", acl_body(action=action, topic=topic, qos=qos))
    assert response.status_code == 200
    assert response.json() == {"result": "allow"}


@pytest.mark.parametrize(
    "overrides",
    [{"topic": "/a1B2c3D4e5F/sensor-002/up"},
     {"topic": "#", "action": "subscribe"},
     {"topic": "/a1B2c3D4e5F/+/up", "action": "subscribe"},
     {"qos": "2"},
     {"retain": "true"},
     {"retain": True},
     {"username": "sensor-001"}],
    ids=["other device", "everything", "wildcard device", "publish qos2", "retain", "retain bool",
         "malformed username"],
)
def test_acl_denies(client, device, overrides):
    assert post(client, "/mqtt/acl", acl_body(**overrides)).json() == {"result": "deny"}


def test_acl_denies_a_disabled_device(client, device):
    Device.objects.filter(pk=device.pk).update(enabled=False)
    assert post(client, "/mqtt/acl", acl_body()).json() == {"result": "deny"}


# -- /mqtt/events ---------------------------------------------------------------------------------


def connect_event(client, peername, connected_at=None):
    """What EMQX sends for a CONNECT the portal accepts: /mqtt/auth, then client.connected."""
    host = peername.rpartition(":")[0]
    assert post(client, "/mqtt/auth", auth_body(peerhost=host)).json()["result"] == "allow"
    event = {"event": "client.connected", "clientid": TLS_CLIENT_ID, "username": USERNAME,
             "peername": peername}
    if connected_at is not None:
        event["connected_at"] = connected_at
    assert post(client, "/mqtt/events", event).status_code == 204


def test_events_keep_the_status(client, device):
    connect_event(client, "10.0.0.7:51234", 1700000000000)
    seen = Device.objects.get(pk=device.pk)
    assert seen.status == DeviceStatus.ONLINE and seen.first_activated_at is not None
    connect_event(client, "10.0.0.8:40000")
    taken_over = {"event": "client.disconnected", "clientid": TLS_CLIENT_ID, "username": USERNAME,
                  "reason": "takenover", "peername": "10.0.0.7:51234"}
    assert post(client, "/mqtt/events", taken_over).status_code == 204
    assert Device.objects.get(pk=device.pk).status == DeviceStatus.ONLINE
    gone = dict(taken_over, reason="normal", peername="10.0.0.8:40000")
    assert post(client, "/mqtt/events", gone).status_code == 204
    assert Device.objects.get(pk=device.pk).status == DeviceStatus.OFFLINE


def test_events_ignore_other_events_and_unknown_devices(client, device):
    assert post(client, "/mqtt/events", {"event": "message.publish", "topic": "x"}).status_code == 204
    other = {"event": "client.connected", "clientid": "x", "username": "nobody&nowhere"}
    assert post(client, "/mqtt/events", other).status_code == 204
    assert Device.objects.get(pk=device.pk).status == DeviceStatus.INACTIVE


# -- the token and malformed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl", "/mqtt/events"])
def test_a_missing_token_is_refused(client, device, path):
    response = client.post(path, data=json.dumps(auth_body()), content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl", "/mqtt/events"])
def test_a_wrong_token_is_refused(client, device, path):
    response = post(client, path, auth_body(), HTTP_AUTHORIZATION="Bearer not-the-token")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "wrong_token"


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl", "/mqtt/events"])
def test_every_call_is_refused_when_no_token_is_configured(client, device, settings, path):
    settings.BROKER_HOOK_TOKEN = ""
    response = post(client, path, auth_body(), HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "hooks_disabled"


def test_hooks_answer_only_post(client, db):
    assert client.get("/mqtt/auth", **AUTH).status_code == 405


@pytest.mark.parametrize(
    "path, body, field",
    [("/mqtt/auth", "{not json", None),
     ("/mqtt/auth", b"\xff\xfe", None),
     ("/mqtt/auth", "[1, 2]", None),
     ("/mqtt/auth", {"clientid": TLS_CLIENT_ID, "username": USERNAME}, "password"),
     ("/mqtt/auth", {"clientid": 5, "username": USERNAME, "password": "x"}, "clientid"),
     ("/mqtt/auth", auth_body(transport="ws"), "transport"),
     ("/mqtt/acl", acl_body(action="all"), "action"),
     ("/mqtt/acl", acl_body(qos="high"), "qos"),
     ("/mqtt/acl", acl_body(qos=True), "qos"),
     ("/mqtt/acl", acl_body(retain="maybe"), "retain"),
     ("/mqtt/acl", {"clientid": "c", "username": USERNAME, "action": "publish"}, "topic"),
     ("/mqtt/events", {"event": "client.connected"}, "username"),
     ("/mqtt/events", {"event": 7}, "event")],
)
def test_malformed_bodies_get_a_400_that_names_the_field(client, device, path, body, field):
    response = post(client, path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and error["message"]


@pytest.mark.parametrize(
    "path, body",
    [("/mqtt/auth", "[" * 100_000),  # nesting deep enough to exhaust the recursion limit
     ("/mqtt/acl", '{"a": ' * 50_000 + "1" + "}" * 50_000),
     ("/mqtt/events", ""),
     ("/mqtt/auth", "null"),
     ("/mqtt/acl", '"a string"')],
    ids=["deep array", "deep object", "empty", "null", "string"],
)
def test_bodies_that_are_no_json_object_get_a_400(client, device, path, body):
    response = post(client, path, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl", "/mqtt/events"])
def test_a_huge_body_gets_a_413_in_json(client, device, settings, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = post(client, path, auth_body(peerhost="x" * 20_000))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    "path, body, field",
    [("/mqtt/auth", auth_body(password=None), "password"),
     ("/mqtt/auth", auth_body(password=["a"]), "password"),
     ("/mqtt/auth", auth_body(peerhost={"ip": 1}), "peerhost"),
     ("/mqtt/auth", auth_body(username=None), "username"),
     ("/mqtt/acl", acl_body(qos=1.5), "qos"),
     ("/mqtt/acl", acl_body(qos="-1"), "qos"),
     ("/mqtt/acl", acl_body(topic=None), "topic"),
     ("/mqtt/acl", acl_body(username=7), "username"),
     ("/mqtt/events", {"event": "client.disconnected", "username": ["x"]}, "username")],
)
def test_fields_of_the_wrong_type_get_a_400_that_names_them(client, device, path, body, field):
    response = post(client, path, body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_a_very_long_client_id_is_denied_not_an_error(client, device):
    response = post(client, "/mqtt/auth", auth_body(clientid="c" * 100_000))
    assert response.status_code == 200 and response.json()["result"] == "deny"


def test_events_delivered_out_of_order_leave_the_latest_state(client, device):
    """A reconnect: connected (t1), disconnected (t2), connected (t3), but the webhook delivers
    the disconnect last. The device is connected, so it must stay online."""
    base = {"clientid": TLS_CLIENT_ID, "username": USERNAME}
    t1, t2, t3 = 1_700_000_000_000, 1_700_000_000_500, 1_700_000_000_900
    connect_event(client, "10.0.0.7:50001", t1)
    connect_event(client, "10.0.0.7:50002", t3)
    late = {"event": "client.disconnected", "disconnected_at": t2, "reason": "normal",
            "peername": "10.0.0.7:50001"}
    assert post(client, "/mqtt/events", {**base, **late}).status_code == 204
    seen = Device.objects.get(pk=device.pk)
    assert seen.status == DeviceStatus.ONLINE
    assert seen.last_online_at.timestamp() * 1000 == t3
    later = {"event": "client.disconnected", "disconnected_at": t3 + 1, "reason": "normal",
             "peername": "10.0.0.7:50002"}
    assert post(client, "/mqtt/events", {**base, **later}).status_code == 204
    assert Device.objects.get(pk=device.pk).status == DeviceStatus.OFFLINE


@pytest.mark.parametrize("value", ["soon", -1, True, 1.5])
def test_an_event_time_that_is_not_milliseconds_is_a_400(client, device, value):
    body = {"event": "client.connected", "username": USERNAME, "connected_at": value}
    response = post(client, "/mqtt/events", body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "connected_at"


def test_a_timestamp_of_thousands_of_digits_is_denied_not_a_500(client, device, settings):
    settings.MQTT_MAX_CLOCK_SKEW_MS = 60_000  # the path that reads the timestamp as a number
    client_id = "sensor-001|securemode=2,signmethod=hmacsha256,timestamp=" + "9" * 5000 + "|"
    response = post(client, "/mqtt/auth", auth_body(clientid=client_id))
    assert response.status_code == 200
    assert response.json()["result"] == "deny"


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl", "/mqtt/events"])
def test_a_lone_surrogate_in_a_text_field_is_a_400_naming_it(client, device, path):
    # Found by tests/test_fuzz.py: "\ud800" is valid JSON but no text; it reached a query (500).
    body = {"/mqtt/auth": auth_body(), "/mqtt/acl": acl_body(),
            "/mqtt/events": {"event": "client.connected", "clientid": "x", "username": USERNAME}}[path]
    body["clientid"] = "\ud800"
    response = post(client, path, json.dumps(body))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "clientid"


@pytest.mark.django_db(transaction=True)
def test_a_connect_refused_for_an_exclusive_holder_needs_no_write_lock(client, device):
    """A refusal only reads: while another process writes (a batch import, a migration), a
    cloned device retrying against the exclusive holder is still answered "deny" at once,
    not queued for SQLite's write lock and then answered 503."""
    import sqlite3

    from django.db import connection
    from django.utils import timezone

    from devices.models import BrokerSession

    BrokerSession.objects.create(device=device, username=USERNAME, client_id="holder",
                                 exclusive=True, connected_at=timezone.now())
    options = connection.settings_dict["OPTIONS"]
    saved = options["timeout"]
    options["timeout"] = 0.5
    connection.close()
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        response = post(client, "/mqtt/auth", auth_body())
    finally:
        other.execute("ROLLBACK")
        other.close()
        options["timeout"] = saved
        connection.close()
    assert response.status_code == 200
    assert response.json() == {"result": "deny", "is_superuser": False}
    assert list(BrokerSession.objects.values_list("client_id", flat=True)) == ["holder"]
