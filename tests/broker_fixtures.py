"""Real processes for tests: the embedded broker (``manage.py runbroker``) and the background
worker (``manage.py db_worker``) on the test database, plus a real MQTT client.

This is a helper module: the fixtures that run these processes (``mqtt_broker``,
``_mqtt_broker_process``, ``start_worker``) are in ``tests/conftest.py``; tests import only the
plain helpers from here (``free_port``, ``BrokerProcess``, ``MqttTestClient``, ``RunWorker``,
``worker_env``, ``wait_finished``, ``wait_status``).
A test using those fixtures is marked ``broker`` by the conftest (so ``make test-fast`` leaves it
out).

The broker is one subprocess for the whole session, reading the test database file, so the test
using it runs with a transactional database (the fixture asks for one: the rows a test creates are
committed and visible to the broker).

Stable attributes: ``host``, ``port`` (TCP, securemode=3), ``tls_port`` (TLS, securemode=2),
``ca_file`` (the development CA, made by ``devices.tls``); methods ``restart(kill=False)``,
``stop(kill=False)``, ``start()``, ``log_mark()`` and ``log_since(mark)``.

The broker runs with ``PORTAL_MQTT_AUTH_CACHE_MS=0`` so that a device disabled in one test is not
remembered in the next; the cache itself is proven in ``tests/test_verifier.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(host, port) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class BrokerProcess:
    host: str
    port: int
    tls_port: int
    ca_file: str
    certfile: str
    keyfile: str
    database_name: str
    log_path: Path
    extra_env: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def command(self):
        return [
            sys.executable, str(ROOT / "manage.py"), "runbroker",
            "--host", self.host, "--port", str(self.port),
            "--tls-port", str(self.tls_port), "--certfile", self.certfile, "--keyfile", self.keyfile,
        ]

    def env(self):
        env = os.environ.copy()
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "DATABASE_URL": f"sqlite:///{self.database_name}",
                "PORTAL_MQTT_AUTH_CACHE_MS": "0",
                "PORTAL_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout=20.0):
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runbroker exited early:\n{self.log_path.read_text()[-3000:]}")
            if _listening(self.host, self.port) and _listening(self.host, self.tls_port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"runbroker did not listen in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, kill=False):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, kill=False):
        self.stop(kill=kill)
        return self.start()

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_mark(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(mark)
            return handle.read().decode("utf-8", "replace")

    def wait_for_log(self, mark: int, text: str, timeout=5.0) -> str:
        """The log since ``mark`` once it contains ``text`` (fails the test after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.log_since(mark)
            if text in seen:
                return seen
            if time.monotonic() > deadline:
                pytest.fail(f"broker log never said {text!r}; it said:\n{seen[-3000:]}")
            time.sleep(0.05)


DB_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


class WorkerProcess:
    """``manage.py db_worker`` as a subprocess on the test database, with its own log."""

    def __init__(self, env):
        self.log_path = Path(tempfile.mkdtemp(prefix="worker-log-")) / "worker.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "db_worker", "--interval", "0.05",
             "--no-startup-delay", "--no-reload"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while "Starting worker" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"db_worker did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, kill=False):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker_env(broker=None, **overrides):
    from django.db import connection

    env = os.environ.copy()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
            "PORTAL_TEST_TASKS_BACKEND": "db",
            "PORTAL_CHECK_TIMEOUT": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if broker is not None:
        env.update(
            {
                "PORTAL_MQTT_HOST": broker.host,
                "PORTAL_MQTT_PORT": str(broker.port),
                "PORTAL_MQTT_TLS_PORT": str(broker.tls_port),
                "PORTAL_MQTT_CA_FILE": broker.ca_file,
            }
        )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def wait_finished(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        check.refresh_from_db()
        if check.is_finished:
            return check
        if time.monotonic() > deadline:
            pytest.fail(f"check {check.pk} still {check.status} after {timeout}s")
        time.sleep(0.05)


class RunWorker:
    """``manage.py runworker`` as a subprocess on the test database."""

    def __init__(self, env, command="runworker"):
        self.log_path = Path(tempfile.mkdtemp(prefix="runworker-log-")) / "worker.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), command, "--interval", "0.05",
                 "--no-startup-delay", "--no-reload"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while "Starting worker" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, kill=False):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_status(check, status, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        check.refresh_from_db()
        if check.status == status:
            return check
        if time.monotonic() > deadline:
            pytest.fail(f"check {check.pk} is {check.status}, never {status}")
        time.sleep(0.05)


class MqttTestClient:
    """A real paho-mqtt 2.x client driven on its own thread, without automatic reconnection
    (paho's ``loop_start`` would reconnect a refused or replaced client and spoil the test)."""

    def __init__(self, mqtt_client_id, username, password, *, host, port, ca_file=None,
                 protocol=None, will=None, keepalive=30):
        import threading

        import paho.mqtt.client as mqtt

        self.connack = threading.Event()
        self.disconnected = threading.Event()
        self.reason_code = None  # the CONNACK's code, an int
        self.messages = []
        self.granted = {}
        self._subscribed = {}
        self._stop = threading.Event()
        self._thread = None
        kwargs = {"protocol": protocol} if protocol is not None else {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mqtt_client_id, **kwargs)
        self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        if will:
            self.client.will_set(*will)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)
        self.client.on_subscribe = self._on_subscribe
        self.host, self.port, self.keepalive = host, port, keepalive

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties):
        self.reason_code = reason_code.value
        self.connack.set()

    def _on_disconnect(self, *_args):
        self.disconnected.set()

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties):
        self.granted[mid] = [code.value for code in reason_codes]
        event = self._subscribed.get(mid)
        if event:
            event.set()

    def _run(self):
        import paho.mqtt.client as mqtt

        while not self._stop.is_set():
            if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                self.disconnected.set()
                break

    def connect(self, timeout=5.0):
        """Connect and wait for the CONNACK; returns its code (None when none came)."""
        import threading

        self.client.connect(self.host, self.port, keepalive=self.keepalive)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.connack.wait(timeout)
        return self.reason_code

    @property
    def connected(self):
        return self.reason_code == 0 and not self.disconnected.is_set()

    def subscribe(self, topic, qos=0, timeout=5.0):
        """Subscribe and wait for the SUBACK; returns the granted code (0x80 = refused)."""
        import threading

        event = threading.Event()
        _result, mid = self.client.subscribe(topic, qos)
        self._subscribed[mid] = event
        if mid in self.granted:
            event.set()
        assert event.wait(timeout), f"no SUBACK for {topic}"
        return self.granted[mid][0]

    def publish(self, topic, payload=b"x", qos=0, retain=False):
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def wait_for_messages(self, count=1, timeout=3.0):
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self):
        if self.connected:
            self.client.disconnect()
            self.disconnected.wait(2)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        try:
            self.client.socket() and self.client.socket().close()
        except OSError:
            pass
