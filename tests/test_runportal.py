"""`make run`'s last step, ``manage.py runportal``, as a person uses it: the three processes start,
a device configured from the parameters the portal serves connects over TCP and over TLS (with the
development CA), "Test connection" is answered by the worker, and Ctrl-C stops all of it.

Ctrl-C is a SIGINT to runportal's process group, as a terminal sends it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.db import connection

from devices.models import ApiToken, Device, Product
from tests.broker_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.broker


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _descendants(pid):
    """All processes below ``pid`` (gunicorn's workers, the worker and broker processes)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _api(port, token, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _connect_and_publish(params, ca_file=None):
    """CONNECT with the served parameters, then a QoS 1 publish inside the device's space."""
    connected, published = threading.Event(), threading.Event()
    codes = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=params["mqttClientId"])
    client.username_pw_set(params["mqttUsername"], params["mqttPassword"])
    if ca_file:
        client.tls_set(ca_certs=ca_file)
    client.on_connect = lambda *args: (codes.append(args[3].value), connected.set())
    client.on_publish = lambda *args: published.set()
    client.connect(params["host"], params["port"])
    client.loop_start()
    try:
        assert connected.wait(5), "no CONNACK"
        client.publish(f"/{params['productId']}/{params['deviceId']}/user/hello", b"hi", qos=1)
        return codes[0], published.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.django_db(transaction=True)
def test_runportal_serves_a_device_over_tcp_and_tls_and_ctrl_c_stops_everything(
    owner, tmp_path
):
    if connection.vendor != "sqlite":
        pytest.skip("the portal's processes share the test database as a SQLite file")
    product = Product.objects.create(product_id="pk-run", name="Run")
    device = Device.objects.create(product=product, device_id="dev-run")
    _record, token = ApiToken.issue(owner)
    web, tcp, tls_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
        "PORTAL_DEBUG": "1",  # development TLS material under PORTAL_DATA_DIR/tls/, as make run
        "PORTAL_DATA_DIR": str(settings.DATA_DIR),
        "PORTAL_MQTT_PORT": str(tcp),
        "PORTAL_MQTT_TLS_PORT": str(tls_port),
        "PORTAL_TEST_TASKS_BACKEND": "db",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PORTAL_MQTT_CA_FILE", None)
    log_path = tmp_path / "runportal.log"
    processes = []
    with open(log_path, "wb") as log:
        portal = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runportal", "--bind", f"127.0.0.1:{web}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not all(_listening(port) for port in (web, tcp, tls_port)):
            assert portal.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        ca_file = Path(settings.DATA_DIR) / "tls" / "ca.pem"
        assert str(ca_file) in log_path.read_text()  # the console says where the CA is

        base = f"/api/v1/products/{product.product_id}/devices/{device.device_id}"
        default = _api(web, token, f"{base}/mqtt-params")
        assert (default["securemode"], default["port"]) == (2, tls_port)
        assert _connect_and_publish(default, ca_file=str(ca_file)) == (0, True)
        plain = _api(web, token, f"{base}/mqtt-params?securemode=3")
        assert (plain["host"], plain["port"]) == ("127.0.0.1", tcp)
        assert _connect_and_publish(plain) == (0, True)

        # "Test connection": queued by the web server, run by runportal's worker.
        time.sleep(0.5)  # the broker records the disconnects above (else: 409 device online)
        check = _api(web, token, f"{base}/checks", body={})
        deadline = time.monotonic() + 15
        while check["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
            check = _api(web, token, f"/api/v1/checks/{check['id']}")
        assert (check["status"], check["outcome"]) == ("succeeded", "accepted"), check

        processes = _descendants(portal.pid)
        assert len(processes) >= 3  # gunicorn (+ its workers), the worker, the broker
    finally:
        os.killpg(portal.pid, signal.SIGINT)  # Ctrl-C
        try:
            portal.wait(timeout=20)
        except subprocess.TimeoutExpired:
            portal.kill()
    output = log_path.read_text()
    assert portal.returncode == 0, output[-3000:]
    assert "Stopped." in output
    assert [pid for pid in processes if _alive(pid)] == []
    assert [port for port in (web, tcp, tls_port) if _listening(port)] == []


def _child_running(parent, word):
    """The pid of ``parent``'s child whose command line holds ``word`` (None if there is none)."""
    for pid in _descendants(parent):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == parent and word.encode() in command and _alive(pid):
            return pid
    return None


@pytest.mark.django_db(transaction=True)
def test_runportal_restarts_a_child_that_dies_and_the_others_keep_running(tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("the portal's processes share the test database as a SQLite file")
    web, tcp = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
        "PORTAL_DATA_DIR": str(settings.DATA_DIR),
        "PORTAL_MQTT_PORT": str(tcp),
        "PORTAL_MQTT_TLS_PORT": "",
        "PORTAL_TEST_TASKS_BACKEND": "db",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "runportal.log"
    with open(log_path, "wb") as log:
        portal = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runportal", "--bind", f"127.0.0.1:{web}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_until(predicate, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert portal.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{what}:\n{log_path.read_text()[-3000:]}"
            assert not web_up[0] or _listening(web), "the web server went down"
            time.sleep(0.05)

    web_up = [False]
    try:
        wait_until(lambda: _listening(web) and _listening(tcp), "the portal never listened")
        web_up[0] = True
        gunicorn = _child_running(portal.pid, "gunicorn")
        wait_until(lambda: _child_running(portal.pid, "runworker"), "no worker")

        broker = _child_running(portal.pid, "runbroker")
        os.kill(broker, signal.SIGKILL)
        wait_until(lambda: "broker was killed by SIGKILL" in log_path.read_text(), "no word of it")
        assert "restarting it in 1 s" in log_path.read_text()
        wait_until(lambda: _listening(tcp) and _child_running(portal.pid, "runbroker") not in
                   (None, broker), "the broker never came back")
        # Dying again at once: the wait doubles.
        os.kill(_child_running(portal.pid, "runbroker"), signal.SIGKILL)
        wait_until(lambda: "restarting it in 2 s" in log_path.read_text(), "no back-off")
        wait_until(lambda: _listening(tcp), "the broker never came back a second time")

        worker = _child_running(portal.pid, "runworker")
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: _child_running(portal.pid, "runworker") not in (None, worker),
                   "the worker never came back")
        assert "Restarted worker" in log_path.read_text()
        assert _child_running(portal.pid, "gunicorn") == gunicorn  # never restarted
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/accounts/login/", timeout=10) as page:
            assert page.status == 200
        processes = _descendants(portal.pid)
    finally:
        os.kill(portal.pid, signal.SIGTERM)  # as a service manager stops it
        try:
            portal.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(portal.pid, signal.SIGKILL)
            portal.wait()
    output = log_path.read_text()
    assert portal.returncode == 0, output[-3000:]
    assert "Stopped." in output
    assert [pid for pid in processes if _alive(pid)] == []
    assert [port for port in (web, tcp) if _listening(port)] == []
