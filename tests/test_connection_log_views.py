"""Who sees the connection log, and what the page, the JSON API and the admin show."""

import pytest

from devices import connection_log

API = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/connections"
PAGE = "/products/a1B2c3D4e5F/devices/sensor-001/"


@pytest.fixture(autouse=True)
def empty_buffer(db):
    connection_log.flush()
    yield
    connection_log.flush()


def refuse(code="device_disabled", username="sensor-001&a1B2c3D4e5F", peer="192.0.2.7:50001"):
    connection_log.record("refused", broker="embedded", code=code, connack=5, peer=peer,
                          transport="tcp", protocol="3.1.1",
                          mqtt_client_id="dev-1|securemode=3|", username=username)


def test_the_api_answers_the_interface_shape_newest_first(client, member, device):
    refuse()
    connection_log.flush()
    refuse(code="unsupported_protocol")
    connection_log.flush()
    client.force_login(member)
    response = client.get(API)
    assert response.status_code == 200
    events = response.json()["events"]
    assert [e["code"] for e in events] == ["unsupported_protocol", "device_disabled"]
    first = events[1]
    assert set(first) >= {"id", "at", "kind", "broker", "clientId", "peer", "transport",
                          "protocol", "connack", "code", "reason", "hint", "count",
                          "sessionSeconds"}
    assert (first["kind"], first["broker"], first["clientId"], first["peer"]) == (
        "refused", "embedded", "dev-1", "192.0.2.7:50001")
    assert first["reason"] == "The device is disabled in the portal."
    assert first["hint"] == "Enable the device on its page; its signature was right."
    assert (first["count"], first["sessionSeconds"], first["connack"]) == (1, None, 5)


def test_since_answers_new_events_and_changed_after_folded_ones(client, member, device):
    refuse()
    connection_log.flush()
    client.force_login(member)
    first_id = client.get(API).json()["events"][0]["id"]
    assert client.get(f"{API}?since={first_id}").json()["events"] == []
    refuse(code="unsupported_protocol")
    connection_log.flush()
    newer = client.get(f"{API}?since={first_id}").json()["events"]
    assert [e["code"] for e in newer] == ["unsupported_protocol"]
    refuse()  # folds into the first row
    connection_log.flush()
    assert client.get(f"{API}?since={newer[0]['id']}").json()["events"] == []
    changed = client.get(API, {"since": newer[0]["id"], "changedAfter": newer[0]["at"]})
    assert [(e["id"], e["count"]) for e in changed.json()["events"]] == [(first_id, 2)]


def test_since_must_be_an_event_id(client, member, device):
    client.force_login(member)
    response = client.get(f"{API}?since=yesterday")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "since"
    response = client.get(API, {"since": "1", "changedAfter": "2026-13-45T99:00"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "changedAfter"


def test_the_api_speaks_the_readers_language(client, member, device):
    refuse()
    connection_log.flush()
    client.force_login(member)
    event = client.get(API, HTTP_ACCEPT_LANGUAGE="zh-hans").json()["events"][0]
    assert event["reason"] == "该设备已在门户中被禁用。"


def test_without_view_device_there_is_no_log(client, django_user_model, device):
    refuse()
    connection_log.flush()
    nobody = django_user_model.objects.create_user("dave", password="x")
    client.force_login(nobody)
    assert client.get(API).status_code == 404
    client.logout()
    assert client.get(API).status_code == 401


def test_the_device_page_shows_the_log_without_javascript(client, member, device):
    refuse()
    connection_log.flush()
    client.force_login(member)
    page = client.get(PAGE).content.decode()
    assert 'id="connection-log"' in page
    assert "Connection log" in page
    assert "Enable the device on its page; its signature was right." in page
    zh = client.get(PAGE, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "连接日志" in zh and "该设备已在门户中被禁用。" in zh


def test_the_product_page_lists_attempts_of_unknown_devices(client, member, product):
    refuse(code="unknown_device", username="ghost-7&a1B2c3D4e5F")
    connection_log.flush()
    client.force_login(member)
    page = client.get("/products/a1B2c3D4e5F/").content.decode()
    assert "Attempts of unknown devices" in page
    assert "ghost-7" in page and "No such device in the registry." in page


def test_the_staff_only_log_needs_is_staff(client, member, owner, db):
    refuse(code="malformed_username", username="not-a-username", peer="203.0.113.9:1")
    connection_log.flush()
    url = "/admin/devices/connectionevent/"
    client.force_login(member)  # view_device, not staff
    assert client.get(url).status_code in (302, 403)
    client.force_login(owner)  # staff
    page = client.get(url)
    assert page.status_code == 200
    assert "203.0.113.9:1" in page.content.decode()


@pytest.mark.parametrize("since", ["\u00b2", "\u0661\u0662", "\uff11"])
def test_since_in_other_digits_than_ascii_is_a_400_naming_it(client, member, device, since):
    client.force_login(member)
    response = client.get(API, {"since": since})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "since"
