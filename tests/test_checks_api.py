"""The check endpoints: POST .../devices/{deviceId}/checks and GET /api/v1/checks/{id}.

Here tasks run at once (the immediate backend) against a port nothing listens on, so a check
really runs and really fails; tests/test_tasks.py runs them through a real db_worker and broker.
"""

import json

import pytest
from django.test import override_settings

from devices.models import ApiToken, CheckStatus, ConnectionCheck, DeviceStatus
from tests.broker_fixtures import free_port

URL = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/checks"


@pytest.fixture
def token(owner):
    return ApiToken.issue(owner)[1]


@pytest.fixture
def closed_broker_port():
    with override_settings(MQTT_HOST="127.0.0.1", MQTT_PORT=free_port(), MQTT_TLS_PORT=None):
        yield


def post(client, token=None, body=None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = json.dumps(body) if body is not None else ""
    return client.post(URL, data=data, content_type="application/json", **headers, **extra)


def test_it_needs_a_login(client, device):
    response = post(client)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_an_unknown_device_is_404(client, device, token):
    response = client.post(
        "/api/v1/products/a1B2c3D4e5F/devices/nope/checks",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_member_without_the_check_permission_is_403(client, device, member):
    member_token = ApiToken.issue(member)[1]
    response = post(client, member_token)
    assert response.status_code == 403
    assert "devices.add_connectioncheck" in response.json()["error"]["message"]
    assert not ConnectionCheck.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"securemode": 4}, "securemode"),
        ({"signmethod": "sha512"}, "signmethod"),
        ({"protocol": "4.0"}, "protocol"),
        ({"force": "yes"}, "force"),
        ({"clientId": "a|b"}, "clientId"),
        ({"colour": "red"}, "colour"),
        ({"securemode": 2}, "securemode"),  # this deployment has no TLS listener
    ],
)
def test_a_bad_option_is_400_naming_the_field(client, device, token, closed_broker_port, body, field):
    response = post(client, token, body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not ConnectionCheck.objects.exists()


def test_a_body_that_is_not_a_json_object_is_400(client, device, token):
    response = client.post(
        URL, data="[1, 2]", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]["message"]


@pytest.mark.parametrize("protocol", [["3.1.1"], {"v": 5}, 5, "4.0"])
def test_a_protocol_that_is_not_one_of_the_names_is_400_not_500(client, device, token, protocol):
    response = client.post(URL, data=json.dumps({"protocol": protocol}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "protocol"


def test_a_bad_body_is_explained_in_chinese_when_asked(client, device, token):
    response = client.post(URL, data="[1]", content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT_LANGUAGE="zh-CN")
    assert response.status_code == 400
    assert "JSON 对象" in response.json()["error"]["message"]


def test_a_check_against_a_broker_that_is_down_fails_with_its_reason(
    client, device, token, closed_broker_port, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, token, {"signmethod": "hmacsha1", "protocol": "5.0"})
    assert response.status_code == 202
    queued = response.json()
    assert queued["status"] == "queued"
    assert queued["options"]["signmethod"] == "hmacsha1"
    assert queued["options"]["protocol"] == "5.0"

    result = client.get(f"/api/v1/checks/{queued['id']}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "failed"
    assert body["outcome"] == "tcp_refused"
    assert body["reason"].startswith("TCP connection refused")
    assert body["hint"]
    assert body["latencyMs"] is not None
    assert body["requestedBy"] == "alice"
    assert body["finishedAt"] is not None


def test_an_online_device_needs_force_and_409_says_why(
    client, device, token, closed_broker_port, django_capture_on_commit_callbacks
):
    device.status = DeviceStatus.ONLINE
    device.save(update_fields=["status"])
    response = post(client, token)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "device_online"
    assert error["field"] == "force"
    assert "disconnects the device" in error["message"]
    assert not ConnectionCheck.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        forced = post(client, token, {"force": True})
    assert forced.status_code == 202
    assert ConnectionCheck.objects.get().status == CheckStatus.FAILED


def test_a_session_post_needs_the_csrf_token(device, owner, closed_broker_port):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = post(client)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    client.get("/api/v1/openapi.json")  # any page; then use the cookie the way the console does
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    response = post(client, HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret))
    assert response.status_code == 202


def test_the_history_lists_the_devices_checks_newest_first(
    client, device, token, closed_broker_port, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, token).json()["id"]
        second = post(client, token, {"protocol": "3.1"}).json()["id"]
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["checks"]] == [second, first]


def test_an_unknown_check_is_404(client, device, token):
    response = client.get("/api/v1/checks/999999", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_reading_a_check_needs_a_login(client, device):
    check = ConnectionCheck.objects.create(device=device)
    assert client.get(f"/api/v1/checks/{check.pk}").status_code == 401


# --- the device page (console) ----------------------------------------------------------------

PAGE = "/products/a1B2c3D4e5F/devices/sensor-001/"


def test_the_device_page_has_a_test_connection_button_and_the_history(
    client, device, owner, closed_broker_port
):
    ConnectionCheck.objects.create(
        device=device, status=CheckStatus.FAILED, outcome="tcp_refused", connack_code=None,
        reason="[Errno 111] Connection refused", latencies={"total": 3.4}, requested_by=owner,
    )
    client.force_login(owner)
    html = client.get(PAGE).content.decode()
    assert 'id="check-button"' in html and "Test connection" in html
    assert "TCP connection refused" in html and "[Errno 111] Connection refused" in html
    assert 'id="check-online-warning"' not in html


def test_the_device_page_warns_when_the_device_is_online(client, device, owner):
    device.status = DeviceStatus.ONLINE
    device.save(update_fields=["status"])
    client.force_login(owner)
    html = client.get(PAGE).content.decode()
    assert 'id="check-online-warning"' in html
    assert "disconnects it" in html


def test_a_member_sees_the_history_but_no_button(client, device, member):
    client.force_login(member)
    html = client.get(PAGE).content.decode()
    assert 'id="check-history"' in html
    assert 'id="check-button"' not in html


def test_the_form_without_javascript_queues_a_check_and_returns_to_the_page(
    client, device, owner, closed_broker_port, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(PAGE + "checks/", {"protocol": "3.1.1", "securemode": "3"})
    assert response.status_code == 302
    assert response["Location"] == PAGE + "#checks"
    check = ConnectionCheck.objects.get()
    assert check.outcome == "tcp_refused"
    page = client.get(PAGE).content.decode()
    assert "queued" in page and "TCP connection refused" in page


def test_the_form_without_javascript_tests_the_options_the_panel_shows(
    client, device, owner, closed_broker_port, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    page = client.get(PAGE, {"securemode": "3", "signmethod": "hmacmd5", "clientId": "c-9"})
    html = page.content.decode()
    assert '<input type="hidden" name="clientId" value="c-9">' in html
    with django_capture_on_commit_callbacks(execute=True):
        client.post(PAGE + "checks/", {"protocol": "3.1.1", "securemode": "3",
                                       "signmethod": "hmacmd5", "clientId": "c-9"})
    options = ConnectionCheck.objects.get().options
    assert (options["securemode"], options["signmethod"], options["clientId"]) == (
        "3", "hmacmd5", "c-9")


def test_the_form_refuses_an_online_device_without_the_checkbox(
    client, device, owner, closed_broker_port
):
    device.status = DeviceStatus.ONLINE
    device.save(update_fields=["status"])
    client.force_login(owner)
    response = client.post(PAGE + "checks/", {"protocol": "3.1.1"}, follow=True)
    assert "force=true" in response.content.decode()
    assert not ConnectionCheck.objects.exists()


def test_the_reason_comes_in_the_requested_language(client, device, token):
    check = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.FAILED, outcome="name_not_resolved"
    )
    url = f"/api/v1/checks/{check.pk}"
    english = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").json()
    chinese = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}",
                         HTTP_ACCEPT_LANGUAGE="zh-hans").json()
    assert english["reason"] == "The broker's host name could not be resolved."
    assert chinese["reason"] != english["reason"] and "PORTAL_MQTT_HOST" in chinese["hint"]
    assert chinese["outcome"] == english["outcome"] == "name_not_resolved"


def test_the_openapi_description_lists_the_check_endpoints(client):
    description = client.get("/api/v1/openapi.json").json()
    assert "post" in description["paths"]["/api/v1/products/{productId}/devices/{deviceId}/checks"]
    assert "get" in description["paths"]["/api/v1/checks/{id}"]
    check = description["components"]["schemas"]["Check"]
    assert {"id", "status", "reason", "latencyMs"} <= set(check["required"])
