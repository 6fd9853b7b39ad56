"""GET /api/v1/products/{productId}/devices/{deviceId}/mqtt-params and the OpenAPI description."""

import pytest

from devices import signing
from devices.models import ApiToken

URL = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params"
SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"


@pytest.fixture(autouse=True)
def broker_settings(settings):
    settings.MQTT_HOST = "mqtt.example.test"
    settings.MQTT_PORT = 1883
    settings.MQTT_TLS_PORT = 8883


def test_it_gives_the_vector_fields_for_the_vector_options(owner_client, device):
    response = owner_client.get(
        URL,
        {"securemode": "2", "signmethod": "hmacmd5", "timestamp": "1700000000000", "clientId": "sensor-001"},
    )
    assert response.status_code == 200
    body = response.json()
    # Vector "hmacmd5 over TLS" of shared/vectors/signing.json.
    assert body == {
        "productId": "a1B2c3D4e5F",
        "deviceId": "sensor-001",
        "clientId": "sensor-001",
        "securemode": 2,
        "signmethod": "hmacmd5",
        "timestamp": 1700000000000,
        "exclusive": False,
        "host": "mqtt.example.test",
        "port": 8883,
        "mqttClientId": "sensor-001|securemode=2,signmethod=hmacmd5,timestamp=1700000000000|",
        "mqttUsername": "sensor-001&a1B2c3D4e5F",
        "mqttPassword": "58c5baa880bf50e122f5eef89653e878",
    }
    assert response["Cache-Control"] == "no-store"


def test_no_timestamp_and_a_mac_client_id_give_the_vector_password(owner_client, device):
    body = owner_client.get(
        URL, {"securemode": "3", "signmethod": "hmacsha256", "timestamp": "none", "clientId": "AA:BB:CC:DD:EE:FF"}
    ).json()
    assert body["timestamp"] is None and body["port"] == 1883
    assert body["mqttClientId"] == "AA:BB:CC:DD:EE:FF|securemode=3,signmethod=hmacsha256|"
    assert body["mqttPassword"] == "447c3efc0367ce4279be805423534c85b9e558b6ceb5529e4ef181d0e9f14b67"


def test_defaults_are_tls_sha256_now_deviceid_not_exclusive(owner_client, device):
    before = signing.now_ms()
    body = owner_client.get(URL).json()
    assert (body["securemode"], body["signmethod"], body["clientId"], body["exclusive"]) == (
        2, "hmacsha256", "sensor-001", False,
    )
    assert before <= body["timestamp"] <= signing.now_ms()
    assert signing.verify(body["mqttClientId"], body["mqttUsername"], body["mqttPassword"], SECRET).accepted


def test_defaults_to_plain_tcp_without_a_tls_port(owner_client, device, settings):
    settings.MQTT_TLS_PORT = None
    body = owner_client.get(URL).json()
    assert (body["securemode"], body["port"]) == (3, 1883)


def test_exclusive_true_is_the_last_extension_parameter(owner_client, device):
    body = owner_client.get(URL, {"exclusive": "true", "timestamp": "5"}).json()
    assert body["exclusive"] is True
    assert body["mqttClientId"].endswith(",timestamp=5,exclusive=true|")


@pytest.mark.parametrize(
    "query, field",
    [
        ({"clientId": "x" * 65}, "clientId"),
        ({"clientId": "a|b"}, "clientId"),
        ({"clientId": "a b"}, "clientId"),
        ({"signmethod": "hmacsha512"}, "signmethod"),
        ({"securemode": "4"}, "securemode"),
        ({"timestamp": "soon"}, "timestamp"),
        ({"timestamp": "-5"}, "timestamp"),
        ({"exclusive": "yes"}, "exclusive"),
    ],
)
def test_a_bad_option_is_a_400_naming_the_field(owner_client, device, query, field):
    response = owner_client.get(URL, query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field
    assert field in error["message"]


def test_tls_without_a_tls_port_is_a_400(owner_client, device, settings):
    settings.MQTT_TLS_PORT = None
    response = owner_client.get(URL, {"securemode": "2"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "securemode"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/products/nope/devices/sensor-001/mqtt-params",
        "/api/v1/products/a1B2c3D4e5F/devices/nope/mqtt-params",
    ],
)
def test_an_unknown_product_or_device_is_a_404(owner_client, device, url):
    response = owner_client.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_anonymous_is_a_401_before_anything_else(client, device):
    # Even with a bad option and for an unknown device: 401 comes first.
    for url in (URL, "/api/v1/products/nope/devices/nope/mqtt-params?securemode=9"):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"


def test_a_member_without_the_secret_permission_is_a_403(client, member, device):
    client.force_login(member)
    response = client.get(URL, {"securemode": "9"})  # 403 before 400
    assert response.status_code == 403
    assert "view_device_secret" in response.json()["error"]["message"]
    assert client.get("/api/v1/products/nope/devices/x/mqtt-params").status_code == 404


def test_an_account_without_the_view_permission_finds_no_device(client, outsider, device):
    client.force_login(outsider)
    response = client.get(URL)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_an_api_token_authenticates(client, owner, device):
    _record, token = ApiToken.issue(owner)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.json()["mqttUsername"] == "sensor-001&a1B2c3D4e5F"
    stored = ApiToken.objects.get()
    assert token not in (stored.token_hash, stored.token_prefix)
    assert stored.last_used_at is not None


def test_a_wrong_api_token_is_a_401(client, owner, device):
    ApiToken.issue(owner)
    response = client.get(URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_a_token_of_a_user_without_the_permission_is_a_403(client, member, device):
    _record, token = ApiToken.issue(member)
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403


def test_the_openapi_description_describes_the_endpoint(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    description = response.json()
    assert description["openapi"].startswith("3.")
    operation = description["paths"]["/api/v1/products/{productId}/devices/{deviceId}/mqtt-params"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {
        "productId", "deviceId", "securemode", "signmethod", "timestamp", "clientId", "exclusive",
    }
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404"}


def test_an_option_error_is_in_the_language_asked_for_and_still_names_the_field(
    owner_client, device, settings
):
    response = owner_client.get(URL, {"clientId": "a|b"}, HTTP_ACCEPT_LANGUAGE="zh-CN")
    error = response.json()["error"]
    assert (response.status_code, error["field"], error["code"]) == (400, "clientId", "invalid_option")
    assert "clientId 不能包含" in error["message"] and "'|'" in error["message"]
    settings.MQTT_TLS_PORT = None
    error = owner_client.get(URL, {"securemode": "2"}, HTTP_ACCEPT_LANGUAGE="zh-CN").json()["error"]
    assert error["code"] == "tls_not_configured"
    assert "没有 TLS 监听端口" in error["message"] and "securemode=3" in error["message"]


@pytest.mark.parametrize("name", ["clientid", "signMethod", "secureMode"])
def test_a_misspelt_option_is_a_400_naming_it(owner_client, device, name):
    response = owner_client.get(URL, {name: "x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == name and error["code"] == "unknown_option"
    assert "clientId" in error["message"]  # lists the real names
