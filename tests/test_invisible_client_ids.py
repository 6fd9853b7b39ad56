"""clientIds with invisible or direction-changing characters are refused everywhere (spec §2).

U+202E (RIGHT-TO-LEFT OVERRIDE) makes ``dev\u202e1-cba`` read as ``devabc-1``; U+200B and U+FEFF
show nothing at all. Each path that takes a clientId refuses them and names the code point."""

import json

import pytest

from devices import diagnosis, signing
from tests.broker_fixtures import MqttTestClient

URL = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params"
SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"  # the conftest device's secret
TOKEN = "hook-token-for-tests"
IDENTIFIER_REJECTED = 0x85  # paho 2.x reports the MQTT 3.1.1 CONNACK 0x02 as this reason code
ACCEPTED = 0

INVISIBLE = [("\u202e", "U+202E"), ("\u200b", "U+200B"), ("\ufeff", "U+FEFF")]


def signed_fields(client_id, product_id="a1B2c3D4e5F", device_id="sensor-001", secret=SECRET,
                  timestamp="1700000000000"):
    """Fields signed correctly for ``client_id``: only the clientId's characters are wrong."""
    mqtt_client_id = f"{client_id}|securemode=3,signmethod=hmacsha256,timestamp={timestamp}|"
    content = f"clientId{client_id}deviceId{device_id}productId{product_id}timestamp{timestamp}"
    return mqtt_client_id, f"{device_id}&{product_id}", signing.sign(secret, content, "hmacsha256")


@pytest.mark.parametrize("char, code_point", INVISIBLE)
def test_mqtt_params_refuse_the_client_id_with_a_400_naming_it(owner_client, device, char,
                                                               code_point):
    response = owner_client.get(URL, {"clientId": f"sensor{char}-001"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["field"], error["code"]) == ("clientId", "invalid_option")
    assert "clientId" in error["message"] and code_point in error["message"]
    assert "format characters" in error["message"]


def test_mqtt_params_say_it_in_chinese(owner_client, device):
    response = owner_client.get(URL, {"clientId": "abc\u202e1"}, HTTP_ACCEPT_LANGUAGE="zh-CN")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "U+202E" in message and "格式字符" in message and "must" not in message


@pytest.mark.parametrize("char, code_point", INVISIBLE)
def test_the_auth_hook_denies_a_correctly_signed_client_id_with_it(client, device, settings,
                                                                   char, code_point):
    settings.BROKER_HOOK_TOKEN = TOKEN
    settings.MQTT_AUTH_CACHE_MS = 0
    mqtt_client_id, username, password = signed_fields(f"sensor{char}-001")
    body = {"clientid": mqtt_client_id, "username": username, "password": password,
            "transport": "tcp"}
    response = client.post("/mqtt/auth", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response.json()["result"] == "deny"
    # The same fields without the invisible character are allowed: it is the character.
    clean = signed_fields("sensor-001")
    body.update(clientid=clean[0], password=clean[2])
    response = client.post("/mqtt/auth", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.json()["result"] == "allow"


@pytest.mark.broker
@pytest.mark.parametrize("char, code_point", INVISIBLE)
def test_the_embedded_broker_refuses_it_with_identifier_rejected(mqtt_broker, char, code_point):
    from devices.models import Device, Product

    product = Product.objects.create(product_id="inv-product", name="Invisible")
    Device.objects.create(product=product, device_id="inv-001", device_secret=SECRET)
    opened = []
    try:
        for client_id, expected in ((f"inv{char}001", IDENTIFIER_REJECTED), ("inv001", ACCEPTED)):
            fields = signed_fields(client_id, product_id="inv-product", device_id="inv-001")
            mark = mqtt_broker.log_mark()
            client = MqttTestClient(*fields, host=mqtt_broker.host, port=mqtt_broker.port)
            opened.append(client)
            assert client.connect() == expected
            if expected != ACCEPTED:
                log = mqtt_broker.wait_for_log(mark, "malformed_client_id")
                assert code_point in log
    finally:
        for client in opened:
            client.close()


@pytest.mark.parametrize("language, words", [("en", "format characters"), ("zh-hans", "格式字符")])
def test_the_debugger_names_the_invisible_character(doc_device, language, words):
    from django.utils import translation

    mqtt_client_id, username, password = signed_fields(
        "123\u202e45", product_id="pk", device_id="device", secret="secret", timestamp="789"
    )
    with translation.override(language):
        result = diagnosis.diagnose(doc_device, mqtt_client_id, username, password)
    assert not result.accepted
    finding = next(f for f in result.findings if f.code == "malformed_client_id")
    assert "U+202E" in finding.message and words in finding.message
    assert "\u202e" not in finding.message
