"""The first run's set-up: an admin account and a demo device whose parameters are right."""

from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command

from devices import signing
from devices.models import Device


def run_setup():
    out = StringIO()
    call_command("setupportal", stdout=out)
    return out.getvalue()


def test_the_first_run_creates_an_admin_and_prints_its_password_once(db, client):
    output = run_setup()
    password = next(line for line in output.splitlines() if "password:" in line).split()[1]
    assert client.login(username="admin", password=password)
    again = run_setup()
    assert password not in again
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert Device.objects.count() == 1


def test_the_demo_device_parameters_follow_the_spec(db, client, settings):
    settings.MQTT_TLS_PORT = None
    output = run_setup()
    password = next(line for line in output.splitlines() if "password:" in line).split()[1]
    client.login(username="admin", password=password)
    body = client.get(
        "/api/v1/products/demo-product/devices/demo-device-001/mqtt-params",
        {"signmethod": "hmacsha1", "timestamp": "789", "clientId": "12345"},
    ).json()
    secret = Device.objects.get(device_id="demo-device-001").device_secret
    # The spec's rule, written out here rather than taken from the code under test.
    import hashlib
    import hmac

    content = "clientId12345deviceIddemo-device-001productIddemo-producttimestamp789"
    assert body["mqttPassword"] == hmac.new(secret.encode(), content.encode(), hashlib.sha1).hexdigest()
    assert body["mqttClientId"] == "12345|securemode=3,signmethod=hmacsha1,timestamp=789|"
    assert body["mqttUsername"] == "demo-device-001&demo-product"
    assert signing.verify(body["mqttClientId"], body["mqttUsername"], body["mqttPassword"], secret).accepted
