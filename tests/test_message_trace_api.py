"""The message trace and send API and the device page's "Messages" section, without a broker:
permissions, validation, errors naming their field, the bound and expiry on the write side, and
the words in English and Chinese. (Real broker tests: test_message_trace_broker.py.)"""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from devices import message_trace
from devices.models import AuditEvent, DeviceMessage, Trace, TraceMessage

pytestmark = pytest.mark.django_db

MESSAGES = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/messages"
TRACES = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/traces"
PAGE = "/products/a1B2c3D4e5F/devices/sensor-001/"


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_starting_a_trace_answers_201_with_its_end(owner_client, device):
    before = timezone.now()
    response = post(owner_client, TRACES, {"minutes": 5})
    assert response.status_code == 201
    body = response.json()
    trace = Trace.objects.get(pk=body["id"])
    assert trace.device == device and body["running"] is True
    assert timedelta(minutes=5) <= trace.until - before < timedelta(minutes=5, seconds=5)
    assert AuditEvent.objects.filter(action="start_trace").count() == 1


def test_a_trace_lasts_10_minutes_by_default_and_at_most_60(owner_client, device):
    trace = Trace.objects.get(pk=post(owner_client, TRACES, {}).json()["id"])
    assert timedelta(minutes=9, seconds=59) < trace.until - trace.started_at <= timedelta(minutes=10)
    response = post(owner_client, TRACES, {"minutes": 61})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "minutes"


@pytest.mark.parametrize("minutes", ["\u00b2", "\u0665", "\uff15", "-5", "5.0"])
def test_minutes_that_are_not_ascii_digits_are_a_400_naming_the_field(owner_client, device,
                                                                      minutes):
    response = post(owner_client, TRACES, {"minutes": minutes})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "minutes"
    assert Trace.objects.count() == 0


def test_a_new_trace_stops_the_running_one(owner_client, device):
    first = post(owner_client, TRACES, {}).json()["id"]
    post(owner_client, TRACES, {})
    assert Trace.objects.get(pk=first).stopped


@pytest.mark.parametrize("user_fixture", ["member", "staff_without_secrets"])
def test_trace_send_and_read_need_the_new_permission(client, device, request, user_fixture, owner):
    from django.contrib.auth.models import Permission

    user = request.getfixturevalue(user_fixture)
    if user_fixture == "staff_without_secrets":  # every devices permission but this one
        user.user_permissions.remove(Permission.objects.get(codename="trace_device"))
    client.force_login(user)
    trace = message_trace.start_trace(device, owner)
    for response in (post(client, TRACES, {}),
                     post(client, MESSAGES, {"topic": "/a1B2c3D4e5F/sensor-001/x", "payload": "x"}),
                     client.get(f"/api/v1/traces/{trace.pk}")):
        assert response.status_code == 403
        assert "Can trace and send device messages" in response.json()["error"]["message"]
    assert DeviceMessage.objects.count() == 0


def test_an_outsider_gets_404_for_a_trace(client, outsider, device, owner):
    trace = message_trace.start_trace(device, owner)
    client.force_login(outsider)
    assert client.get(f"/api/v1/traces/{trace.pk}").status_code == 404


def test_a_topic_outside_the_space_is_a_400_naming_the_field_and_the_spaces(owner_client, device):
    response = post(owner_client, MESSAGES, {"topic": "/other/x", "payload": "hi", "qos": 1})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "topic"
    assert "/sys/a1B2c3D4e5F/sensor-001/" in error["message"]
    assert "/a1B2c3D4e5F/sensor-001/" in error["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"topic": "/a1B2c3D4e5F/sensor-001/#", "payload": "x"}, "topic"),
    ({"payload": "x"}, "topic"),
    ({"topic": "/a1B2c3D4e5F/sensor-001/x", "payload": "x", "qos": 2}, "qos"),
    ({"topic": "/a1B2c3D4e5F/sensor-001/x", "payload": "x", "qos": True}, "qos"),
    ({"topic": "/a1B2c3D4e5F/sensor-001/x", "payload": 5}, "payload"),
    ({"topic": "/a1B2c3D4e5F/sensor-001/x", "retain": True}, "retain"),
])
def test_bad_sends_are_400s_naming_the_field(owner_client, device, body, field):
    response = post(owner_client, MESSAGES, body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_without_a_broker_the_send_says_the_broker_did_not_answer(owner_client, device, monkeypatch):
    monkeypatch.setattr(message_trace, "SEND_WAIT_S", 0.2)
    response = post(owner_client, MESSAGES, {"topic": "/a1B2c3D4e5F/sensor-001/x", "payload": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "broker_unavailable"
    assert DeviceMessage.objects.get().result == "expired"


def test_the_bound_of_200_holds_for_recorded_messages(device, owner):
    trace = message_trace.start_trace(device, owner)
    for number in range(150):
        message_trace.record(trace.pk, "from_device", "/t", 0, str(number).encode())
    message_trace.flush()
    for number in range(150, 300):
        message_trace.record(trace.pk, "from_device", "/t", 0, str(number).encode())
    message_trace.flush()
    kept = [bytes(m.payload) for m in TraceMessage.objects.filter(trace=trace).order_by("id")]
    assert kept == [str(n).encode() for n in range(200)]


def test_messages_after_the_end_of_a_trace_are_not_written(device, owner):
    trace = message_trace.start_trace(device, owner)
    message_trace.record(trace.pk, "from_device", "/t", 0, b"in time")
    message_trace.stop_trace(trace)
    message_trace.record(trace.pk, "from_device", "/t", 0, b"late")
    message_trace.flush()
    assert [bytes(m.payload) for m in trace.messages.all()] == [b"in time"]


def test_the_payload_kept_is_the_first_kib_and_the_size_is_the_whole(device, owner, owner_client):
    trace = message_trace.start_trace(device, owner)
    message_trace.record(trace.pk, "to_device", "/t", 1, b"a" * 5000)
    message_trace.flush()
    shown = owner_client.get(f"/api/v1/traces/{trace.pk}").json()["messages"][0]
    assert (shown["size"], len(shown["payload"]), shown["truncated"]) == (5000, 1024, True)
    assert shown["direction"] == "to_device" and shown["encoding"] == "utf8"


def test_reading_a_trace_after_an_id_answers_only_newer_messages(device, owner, owner_client):
    trace = message_trace.start_trace(device, owner)
    for payload in (b"one", b"two", b"three"):
        message_trace.record(trace.pk, "from_device", "/t", 0, payload)
    message_trace.flush()
    first = trace.messages.order_by("id").first()
    body = owner_client.get(f"/api/v1/traces/{trace.pk}?after={first.pk}").json()
    assert [m["payload"] for m in body["messages"]] == ["two", "three"]
    assert owner_client.get(f"/api/v1/traces/{trace.pk}?after=x").json()["error"]["field"] == "after"


def test_prunechecks_deletes_traces_older_than_the_retention(device, owner, settings):
    settings.TRACE_RETENTION_DAYS = 1
    old = message_trace.start_trace(device, owner)
    Trace.objects.filter(pk=old.pk).update(until=timezone.now() - timedelta(days=1, minutes=1))
    message_trace.record(old.pk, "from_device", "/t", 0, b"x")
    recent = message_trace.start_trace(device, owner)
    Trace.objects.filter(pk=recent.pk).update(until=timezone.now() - timedelta(hours=23))
    call_command("prunechecks")
    assert list(Trace.objects.values_list("pk", flat=True)) == [recent.pk]


def test_the_page_without_the_permission_says_who_to_ask(client, member, device, django_user_model):
    django_user_model.objects.create_superuser("root-admin", password="x")
    client.force_login(member)
    page = client.get(PAGE).content.decode()
    assert "Can trace and send device messages" in page and "root-admin" in page
    assert 'id="send-form"' not in page


def test_the_page_shows_the_trace_with_json_pretty_printed(owner_client, device, owner):
    trace = message_trace.start_trace(device, owner)
    message_trace.record(trace.pk, "from_device", "/a1B2c3D4e5F/sensor-001/up", 1, b'{"t":1}')
    message_trace.flush()
    page = owner_client.get(PAGE).content.decode()
    assert "/a1B2c3D4e5F/sensor-001/up" in page
    assert '{\n  &quot;t&quot;: 1\n}' in page
    assert 'id="trace-stop"' in page and 'id="send-form"' in page


def test_the_section_s_words_are_chinese_in_chinese(owner_client, device):
    page = owner_client.get(PAGE, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "发送到设备" in page and "开始跟踪" in page


def test_a_bad_topic_from_the_page_form_is_shown_naming_the_field(owner_client, device):
    response = owner_client.post(PAGE + "messages/", {"topic": "/x", "payload": "p", "qos": "1"},
                                 follow=True)
    page = response.content.decode()
    assert "(topic)" in page and "/sys/a1B2c3D4e5F/sensor-001/" in page


def test_starting_and_stopping_from_the_page(owner_client, device):
    owner_client.post(PAGE + "trace/start/", {"minutes": "3"})
    trace = Trace.objects.get()
    assert trace.running
    owner_client.post(PAGE + "trace/stop/")
    trace.refresh_from_db()
    assert trace.stopped and not trace.running
