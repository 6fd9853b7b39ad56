"""Message trace and send with EMQX, against a fake of EMQX 5.8's REST API (tests/fake_emqx_api.py)
built from the files devices/emqx_trace.py names; and the /mqtt/trace hook the trace rule calls."""

import base64
import json

import pytest

from devices import message_trace
from devices.models import Trace, TraceMessage
from tests.fake_emqx_api import FakeEmqxApi

pytestmark = pytest.mark.django_db

USERNAME = "sensor-001&a1B2c3D4e5F"
MESSAGES = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/messages"
TRACES = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/traces"
TOKEN = "hook-token-for-tests"


@pytest.fixture
def api(settings):
    fake = FakeEmqxApi().start()
    settings.EMQX_API_URL = fake.url
    settings.EMQX_API_KEY = fake.key
    settings.EMQX_API_SECRET = fake.secret
    settings.EMQX_API_TIMEOUT = 2
    settings.EMQX_HOOK_BASE_URL = "http://portal.example:8000"
    settings.BROKER_HOOK_TOKEN = TOKEN
    yield fake
    fake.stop()


def post(client, url, body, **headers):
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


def test_send_publishes_through_the_rest_api(owner_client, device, api):
    api.connected.add(USERNAME)
    api.subscriptions[USERNAME] = [("/a1B2c3D4e5F/sensor-001/down", 1)]
    response = post(owner_client, MESSAGES,
                    {"topic": "/a1B2c3D4e5F/sensor-001/down", "payload": "héllo", "qos": 1})
    assert response.status_code == 200 and response.json()["result"] == "sent"
    assert "EMQX, which does not wait for the device's PUBACK" in response.json()["message"]
    published = api.published[-1]
    assert (published["topic"], published["qos"], published["data"], published["retain"]) == (
        "/a1B2c3D4e5F/sensor-001/down", 1, "héllo".encode(), False)


def test_send_to_a_device_emqx_does_not_have_is_not_connected(owner_client, device, api):
    response = post(owner_client, MESSAGES, {"topic": "/a1B2c3D4e5F/sensor-001/down", "payload": "x"})
    assert response.json()["result"] == "not_connected"
    assert api.published == []


def test_send_without_a_matching_subscription_names_them(owner_client, device, api):
    api.connected.add(USERNAME)
    api.subscriptions[USERNAME] = [("/sys/a1B2c3D4e5F/sensor-001/#", 0)]
    body = post(owner_client, MESSAGES, {"topic": "/a1B2c3D4e5F/sensor-001/down", "payload": "x"}).json()
    assert body["result"] == "no_subscription"
    assert body["subscriptions"] == [{"topic": "/sys/a1B2c3D4e5F/sensor-001/#", "qos": 0}]


def test_a_trace_creates_a_rule_for_the_device_only_and_stopping_deletes_it(owner_client, device, api):
    body = post(owner_client, TRACES, {"minutes": 2}).json()
    trace = Trace.objects.get(pk=body["id"])
    rule = api.rules[trace.emqx_rule_id]
    assert rule["actions"] == ["http:portal_trace"]
    assert '"/a1B2c3D4e5F/sensor-001/#"' in rule["sql"] and '"$events/message_delivered"' in rule["sql"]
    assert f"clientid = '{USERNAME}'" in rule["sql"]
    connector = api.connectors["portal_trace"]
    assert connector["url"] == "http://portal.example:8000/mqtt/trace"
    assert connector["headers"]["Authorization"] == f"Bearer {TOKEN}"
    # a second trace reuses the connector and action (EMQX answers ALREADY_EXISTS)
    second = post(owner_client, TRACES, {}).json()
    assert trace.emqx_rule_id not in api.rules
    assert f"portal_trace_{second['id']}" in api.rules
    owner_client.post(f"/api/v1/traces/{second['id']}/stop")
    assert api.rules == {}


def test_the_trace_hook_records_what_the_rule_sends(client, owner_client, device, api):
    trace_id = post(owner_client, TRACES, {}).json()["id"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    for event, payload in (("message.publish", b'{"t":1}'), ("message.delivered", b"\xff")):
        response = post(client, "/mqtt/trace", {
            "event": event, "clientid": USERNAME, "topic": "/a1B2c3D4e5F/sensor-001/up", "qos": 1,
            "payload_b64": base64.b64encode(payload).decode(), "trace_id": trace_id,
            "timestamp": 1700000000000}, **auth)
        assert response.status_code == 204
    other = post(client, "/mqtt/trace", {"event": "message.publish", "clientid": "x&y", "topic": "/y/x",
                                         "qos": 0, "payload_b64": "", "trace_id": trace_id}, **auth)
    assert other.status_code == 204
    messages = owner_client.get(f"/api/v1/traces/{trace_id}").json()["messages"]
    assert [(m["direction"], m["payload"], m["encoding"]) for m in messages] == [
        ("from_device", '{"t":1}', "utf8"), ("to_device", "ff", "hex")]
    assert post(client, "/mqtt/trace", {"trace_id": trace_id}).status_code == 401


def test_the_trace_hook_keeps_the_bound(client, owner_client, device, api):
    trace = Trace.objects.get(pk=post(owner_client, TRACES, {}).json()["id"])
    Trace.objects.filter(pk=trace.pk).update(message_count=message_trace.MAX_MESSAGES)
    post(client, "/mqtt/trace", {"event": "message.publish", "clientid": USERNAME, "topic": "/t",
                                 "qos": 0, "payload_b64": "", "trace_id": trace.pk},
         HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert TraceMessage.objects.count() == 0


def test_a_trace_fails_cleanly_when_emqx_does_not_answer(owner_client, device, api):
    api.fail_with = 500
    response = post(owner_client, TRACES, {})
    assert response.status_code == 502
    assert Trace.objects.count() == 0


ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}


def test_a_trace_without_the_hook_base_url_says_so_in_the_reader_s_language(owner_client, device,
                                                                             api, settings):
    settings.EMQX_HOOK_BASE_URL = ""
    english = post(owner_client, TRACES, {}).json()["error"]["message"]
    assert "PORTAL_EMQX_HOOK_BASE_URL is not set" in english
    chinese = post(owner_client, TRACES, {}, **ZH).json()["error"]["message"]
    assert "PORTAL_EMQX_HOOK_BASE_URL 未设置" in chinese and "EMQX 未能创建" in chinese
    assert Trace.objects.count() == 0


def test_a_trace_emqx_refuses_names_the_call_in_the_reader_s_language(owner_client, device, api):
    api.fail_with = 500
    assert "EMQX answered /api/v5/connectors with HTTP 500." in post(
        owner_client, TRACES, {}).json()["error"]["message"]
    assert "EMQX 对 /api/v5/connectors 的回答是 HTTP 500。" in post(
        owner_client, TRACES, {}, **ZH).json()["error"]["message"]


def test_a_send_emqx_does_not_answer_says_so_in_the_reader_s_language(owner_client, device, api,
                                                                       settings):
    api.stop()
    body = {"topic": "/a1B2c3D4e5F/sensor-001/down", "payload": "x"}
    english = post(owner_client, MESSAGES, body)
    assert english.status_code == 503
    assert english.json()["error"]["message"] == "EMQX's REST API did not answer."
    assert post(owner_client, MESSAGES, body, **ZH).json()["error"]["message"] == (
        "EMQX 的 REST API 没有应答。")


def test_a_publish_emqx_refuses_says_so_in_the_reader_s_language(owner_client, device, api,
                                                                 monkeypatch):
    api.connected.add(USERNAME)
    api.subscriptions[USERNAME] = [("/a1B2c3D4e5F/sensor-001/#", 1)]
    refuse = api.v5_call

    def refusing(method, path, body):
        return (503, {"code": "SERVICE_UNAVAILABLE"}) if path == "/api/v5/publish" else refuse(
            method, path, body)

    monkeypatch.setattr(api, "v5_call", refusing)
    body = {"topic": "/a1B2c3D4e5F/sensor-001/down", "payload": "x"}
    assert post(owner_client, MESSAGES, body).json()["error"]["message"] == (
        "EMQX answered the publish with HTTP 503.")
    assert post(owner_client, MESSAGES, body, **ZH).json()["error"]["message"] == (
        "EMQX 对发布请求的回答是 HTTP 503。")
