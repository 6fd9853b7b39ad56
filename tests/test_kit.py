"""The connection kit (GET .../kit): its access rules, layout and audit, and its C and Node
examples built and run unchanged against the real embedded broker over TCP and TLS."""

import io
import json
import os
import socket
import subprocess
import threading
import time
import zipfile

import pytest

from devices import device_code
from devices.kit import build_kit
from devices.models import AuditEvent, Device, Product
from devices.options import ConnectionOptions
from tests import toolchains
from tests.broker_fixtures import free_port

KIT_URL = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/kit"
# Any printable text may be a secret: quotes, backslashes, trigraphs, template markers.
HOSTILE_SECRET = 'q"\\??=`${x}`\'%s*/é'


def _zip(response):
    assert response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.content))


def test_the_kit_needs_a_login(client, device):
    response = client.get(KIT_URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_kit_of_an_unknown_device_is_404(owner_client, device):
    response = owner_client.get("/api/v1/products/a1B2c3D4e5F/devices/nobody/kit")
    assert response.status_code == 404


def test_the_kit_needs_the_permission_to_see_secrets(client, member, device):
    client.force_login(member)
    response = client.get(KIT_URL)
    assert response.status_code == 403
    assert "devices.view_device_secret" in response.json()["error"]["message"]
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.DOWNLOAD_KIT).exists()


def test_a_bad_option_names_its_field(owner_client, device):
    response = owner_client.get(KIT_URL + "?signmethod=hmacsha512")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "signmethod"
    response = owner_client.get(KIT_URL + "?clientid=x")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "clientid"
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.DOWNLOAD_KIT).exists()


def test_the_plain_tcp_kit_holds_params_readme_and_every_example_and_is_audited(
    owner_client, owner, device, settings
):
    settings.MQTT_TLS_PORT = None
    response = owner_client.get(KIT_URL + "?signmethod=hmacsha1&timestamp=1732500000123")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="a1B2c3D4e5F-sensor-001-kit.zip"'
    assert response["Cache-Control"] == "no-store"
    names = set(_zip(response).namelist())
    assert {"params.json", "README.md", "c-paho/Makefile", "c-paho/main.c",
            "node-mqttjs/package.json", "node-mqttjs/index.js", "arduino-esp32/arduino-esp32.ino",
            "esp-idf/main/main.c", "micropython/main.py", "signing/mqtt_sign_mbedtls.c"} <= names
    assert "ca.pem" not in names
    params = json.loads(_zip(response).read("params.json"))
    answer = owner_client.get(
        "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params"
        "?signmethod=hmacsha1&timestamp=1732500000123"
    ).json()
    assert params == answer
    event = AuditEvent.objects.get(action=AuditEvent.Action.DOWNLOAD_KIT)
    assert event.actor == owner
    assert event.targets == ["a1B2c3D4e5F/sensor-001"]
    assert device.device_secret not in event.detail


def test_the_tls_kit_holds_the_ca(owner_client, device, settings, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings.MQTT_TLS_PORT = 8883
    settings.MQTT_CA_FILE = str(ca)
    kit = _zip(owner_client.get(KIT_URL + "?securemode=2"))
    assert kit.read("ca.pem").decode() == ca.read_text()
    assert json.loads(kit.read("params.json"))["port"] == 8883
    assert "MIIB" in kit.read("esp-idf/main/main.c").decode()


def test_the_console_panel_offers_the_kit_and_the_connect_size(owner_client, device, settings):
    settings.MQTT_TLS_PORT = None
    page = owner_client.get(
        "/products/a1B2c3D4e5F/devices/sensor-001/?panel=1&signmethod=hmacsha1&clientId=SN1"
    ).content.decode()
    assert (KIT_URL + "?securemode=3&amp;signmethod=hmacsha1&amp;timestamp=now&amp;clientId=SN1"
            ) in page
    params = device.connection_params(ConnectionOptions(signmethod="hmacsha1", client_id="SN1"))
    size = device_code.connect_packet_size(params)
    assert f'data-connect-size="{size}"' in page


def test_the_panel_warns_when_the_connect_exceeds_pubsubclients_buffer(owner_client, settings):
    settings.MQTT_TLS_PORT = None
    product = Product.objects.create(product_id="p" * 60, name="long")
    Device.objects.create(product=product, device_id="d" * 60, device_secret="s")
    page = owner_client.get(
        f"/products/{'p' * 60}/devices/{'d' * 60}/?panel=1&clientId={'c' * 60}"
    ).content.decode()
    assert 'data-size-warning="256"' in page
    assert 'data-size-warning="128"' in page


def test_the_panel_hides_the_kit_from_those_who_may_not_see_secrets(client, member, device):
    client.force_login(member)
    page = client.get("/products/a1B2c3D4e5F/devices/sensor-001/?panel=1").content.decode()
    assert "/kit" not in page


# --- Built and run against the real broker --------------------------------------------------


def _device(secret=HOSTILE_SECRET):
    product, _ = Product.objects.get_or_create(product_id="kit-prod", defaults={"name": "kit"})
    return Device.objects.create(product=product, device_id="kit-dev", device_secret=secret)


def _extract(kit, directory):
    zipfile.ZipFile(io.BytesIO(kit.content)).extractall(directory)
    return directory


def _broker_kit(broker, settings, securemode, signmethod="hmacsha256", secret=HOSTILE_SECRET):
    settings.MQTT_HOST = broker.host
    settings.MQTT_PORT = broker.port
    settings.MQTT_TLS_PORT = broker.tls_port
    settings.MQTT_CA_FILE = broker.ca_file
    device = _device(secret)
    kit = build_kit(
        device, ConnectionOptions(securemode=securemode, signmethod=signmethod, client_id="SN-7"),
    )
    return device, kit


def _make_paho(folder):
    toolchains.need_make()
    toolchains.need_header("MQTTClient.h", "libpaho-mqtt-dev")
    toolchains.need_header("openssl/hmac.h", "libssl-dev")
    result = subprocess.run(["make"], cwd=folder, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"make failed:\n{result.stdout}\n{result.stderr}"
    return folder / "device"


def _assert_connected_and_published(device, broker, mark, result):
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{broker.log_since(mark)}"
    assert "CONNACK 0" in result.stdout
    assert "PUBACK received" in result.stdout
    log = broker.log_since(mark)
    assert "Refused" not in log and "refused" not in log, log
    # The broker admitted it: it records the device online (on its own thread, so wait a little).
    deadline = time.monotonic() + 5
    device.refresh_from_db()
    while device.last_online_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
        device.refresh_from_db()
    assert device.last_online_at is not None


@pytest.mark.broker
@pytest.mark.parametrize("securemode", [3, 2])
def test_the_paho_c_example_builds_with_make_and_publishes_at_qos_1(
    mqtt_broker, settings, tmp_path, securemode
):
    device, kit = _broker_kit(mqtt_broker, settings, securemode)
    folder = _extract(kit, tmp_path) / "c-paho"
    binary = _make_paho(folder)
    mark = mqtt_broker.log_mark()
    result = subprocess.run([str(binary)], cwd=folder, capture_output=True, text=True, timeout=60)
    _assert_connected_and_published(device, mqtt_broker, mark, result)


@pytest.mark.broker
@pytest.mark.parametrize("securemode, signmethod", [(3, "hmacmd5"), (2, "hmacsha1")])
def test_the_node_example_runs_with_mqtt_js_and_publishes_at_qos_1(
    mqtt_broker, settings, tmp_path, securemode, signmethod
):
    modules = toolchains.need_mqtt_js()
    node = toolchains.need_node()
    device, kit = _broker_kit(mqtt_broker, settings, securemode, signmethod)
    folder = _extract(kit, tmp_path) / "node-mqttjs"
    (folder / "node_modules").symlink_to(modules)  # what `npm install` would have put there
    mark = mqtt_broker.log_mark()
    result = subprocess.run([node, "index.js"], cwd=folder, capture_output=True, text=True,
                            timeout=60)
    _assert_connected_and_published(device, mqtt_broker, mark, result)


@pytest.mark.broker
def test_the_paho_c_example_exits_non_zero_when_the_broker_refuses_it(
    mqtt_broker, settings, tmp_path
):
    device, kit = _broker_kit(mqtt_broker, settings, 3)
    device.device_secret = "rotated-meanwhile"
    device.save()
    folder = _extract(kit, tmp_path) / "c-paho"
    binary = _make_paho(folder)
    result = subprocess.run([str(binary)], cwd=folder, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "connect failed: 4" in result.stderr  # CONNACK 4: bad username or password


# --- The size check against the bytes a real client sends ------------------------------------


def _capture_first_packet(server, captured):
    connection, _ = server.accept()
    with connection:
        connection.settimeout(10)
        data = b""
        while True:
            chunk = connection.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) >= 2:
                remaining, multiplier, index = 0, 1, 1
                while index < len(data):
                    byte = data[index]
                    remaining += (byte & 0x7F) * multiplier
                    multiplier *= 128
                    index += 1
                    if not byte & 0x80:
                        break
                if len(data) >= index + remaining:
                    captured.append(data[: index + remaining])
                    break


def _strings(packet, offset, count):
    values = []
    for _ in range(count):
        length = int.from_bytes(packet[offset:offset + 2], "big")
        values.append(packet[offset + 2:offset + 2 + length].decode())
        offset += 2 + length
    return values


@pytest.mark.django_db
@pytest.mark.parametrize("signmethod", ["hmacmd5", "hmacsha256"])
def test_the_connect_size_shown_is_the_size_of_the_packet_paho_sends(settings, tmp_path,
                                                                     signmethod):
    settings.MQTT_TLS_PORT = None
    settings.MQTT_HOST = "127.0.0.1"
    settings.MQTT_PORT = free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", settings.MQTT_PORT))
    server.listen(1)
    server.settimeout(30)
    device = _device()
    kit = build_kit(device, ConnectionOptions(securemode=3, signmethod=signmethod,
                                              client_id="AA:BB:CC:DD:EE:FF"))
    folder = _extract(kit, tmp_path) / "c-paho"
    binary = _make_paho(folder)
    captured = []
    thread = threading.Thread(target=_capture_first_packet, args=(server, captured))
    thread.start()
    process = subprocess.Popen([str(binary)], cwd=folder, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    thread.join(30)
    process.kill()
    process.communicate()
    server.close()
    assert captured, "paho sent no CONNECT"
    packet = captured[0]
    assert packet[0] == 0x10  # CONNECT
    start = 2 if packet[1] < 0x80 else 3  # after the remaining length (1 or 2 bytes here)
    assert packet[start:start + 7] == b"\x00\x04MQTT\x04"  # MQTT 3.1.1, set explicitly
    assert packet[start + 7] == 0xC2  # username, password, clean session; no will
    assert packet[start + 8:start + 10] == (60).to_bytes(2, "big")  # keep-alive 60 s
    client_id, username, password = _strings(packet, start + 10, 3)
    # The example signed with its own clock; the kit's params with the download's: same length.
    assert client_id.split("timestamp=")[0] == kit.params["mqttClientId"].split("timestamp=")[0]
    assert username == kit.params["mqttUsername"]
    assert len(password) == len(kit.params["mqttPassword"])
    assert len(packet) == device_code.connect_packet_size(kit.params)
    assert len(packet) == device_code.connect_packet_size(
        {"mqttClientId": client_id, "mqttUsername": username, "mqttPassword": password}
    )


def test_the_ci_script_requires_the_toolchains():
    from tests.broker_fixtures import ROOT

    script = (ROOT / ".ci" / "run").read_text()
    assert "PORTAL_REQUIRE_TOOLCHAINS=1" in script
    assert "libpaho-mqtt-dev" in script and "libmbedtls-dev" in script
    assert os.path.join(".cache", "portal-kit-node") in script or "PORTAL_KIT_NODE_DIR" in script


def test_the_size_check_and_the_kit_button_speak_chinese(owner_client, device, settings):
    settings.MQTT_TLS_PORT = None
    page = owner_client.get(
        "/products/a1B2c3D4e5F/devices/sensor-001/?panel=1", HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    for words in ("CONNECT 报文为", "下载连接套件", "C 语言签名，使用 mbedTLS", "超过 128 字节"):
        assert words in page, words


def test_the_openapi_description_describes_the_kit(client):
    description = client.get("/api/v1/openapi.json").json()
    operation = description["paths"]["/api/v1/products/{productId}/devices/{deviceId}/kit"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"securemode", "clientId", "exclusive"}
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404"}
    assert "application/zip" in operation["responses"]["200"]["content"]


@pytest.mark.broker
@pytest.mark.parametrize("example", ["c-paho", "node-mqttjs"])
def test_the_tls_examples_refuse_a_broker_their_ca_did_not_sign(
    mqtt_broker, settings, tmp_path, example
):
    from devices import tls

    _device_row, kit = _broker_kit(mqtt_broker, settings, 2)
    root = _extract(kit, tmp_path / "kit")
    other = tls.ensure_development_certificates(tmp_path / "other-ca")
    (root / "ca.pem").write_bytes(other.ca_file.read_bytes())
    folder = root / example
    if example == "c-paho":
        command = [str(_make_paho(folder))]
    else:
        (folder / "node_modules").symlink_to(toolchains.need_mqtt_js())
        command = [toolchains.need_node(), "index.js"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CONNACK 0" not in result.stdout
    # Paho: "connect failed: -1" (no CONNACK); mqtt.js: "unable to verify the first certificate".
    assert "connect failed: -1" in result.stderr or "verify" in result.stderr
