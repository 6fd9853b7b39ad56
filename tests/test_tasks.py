"""Checks end to end: a real broker (``mqtt_broker``), a real ``manage.py db_worker`` process,
and each outcome produced by a real fault.

(``start_worker`` and ``mqtt_broker`` are in tests/conftest.py.)
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from django.db import connection
from django.utils import timezone
from paho.mqtt.enums import CallbackAPIVersion

from devices.connection_check import Outcome
from devices.models import CheckStatus, ConnectionCheck, Device, DeviceStatus, process_scope
from devices.options import ConnectionOptions
from devices.tasks import DeviceOnlineError, request_check
from tests.broker_fixtures import BrokerProcess, free_port, wait_finished, wait_status
from tests.fake_servers import make_ca, write_ca


def run(device, **kwargs):
    return wait_finished(request_check(device, **kwargs))


# --- healthy ---------------------------------------------------------------------------------


def test_a_healthy_device_succeeds_over_tls_with_latencies(mqtt_broker, start_worker, device, owner):
    start_worker(mqtt_broker)
    check = request_check(device, requested_by=owner)
    assert check.status == CheckStatus.QUEUED
    check = wait_finished(check)
    assert check.status == CheckStatus.SUCCEEDED, check.reason
    assert check.outcome == Outcome.ACCEPTED
    assert check.connack_code == 0
    assert {"tcp", "tls", "connack", "puback", "total"} <= set(check.latencies)
    assert all(value >= 0 for value in check.latencies.values())
    assert check.latencies["total"] >= check.latencies["connack"] + check.latencies["puback"]
    assert check.queued_at <= check.started_at <= check.finished_at
    assert check.task_id
    assert check.requested_by == owner
    # The check connected as the device: the broker saw it come and go.
    deadline = time.monotonic() + 5
    while device.status != DeviceStatus.OFFLINE and time.monotonic() < deadline:
        time.sleep(0.05)
        device.refresh_from_db()
    assert device.status == DeviceStatus.OFFLINE
    assert device.first_activated_at is not None


def test_plain_tcp_and_signmethods_succeed_too(mqtt_broker, start_worker, device):
    start_worker(mqtt_broker)
    options = ConnectionOptions(securemode=3, signmethod="hmacmd5", timestamp=None,
                                client_id="AA-BB-CC", exclusive=True)
    check = run(device, options=options)
    assert check.outcome == Outcome.ACCEPTED, check.reason
    assert "tls" not in check.latencies
    assert check.options["securemode"] == "3"


# --- refusals by the broker ------------------------------------------------------------------


def test_a_disabled_device_is_refused_not_authorized(mqtt_broker, start_worker, device):
    start_worker(mqtt_broker)
    device.set_enabled(False)
    check = run(device)
    assert check.status == CheckStatus.FAILED
    assert check.outcome == Outcome.REFUSED_NOT_AUTHORIZED
    assert check.connack_code == 5  # MQTT 3.1.1 §3.2.2.3: 5 = not authorized
    assert "enabled" in check.hint


def test_mqtt_5_against_the_3_1_1_broker_is_protocol_version_not_supported(
    mqtt_broker, start_worker, device
):
    start_worker(mqtt_broker)
    check = run(device, protocol="5.0")
    assert check.outcome == Outcome.REFUSED_PROTOCOL
    assert check.connack_code == 1


@pytest.fixture
def caching_broker(_mqtt_broker_process, transactional_db):
    """A second broker that remembers a device's secret for 1.5 s (the spec allows 2 s)."""
    shared = _mqtt_broker_process
    broker = BrokerProcess(
        host="127.0.0.1", port=free_port(), tls_port=free_port(), ca_file=shared.ca_file,
        certfile=shared.certfile, keyfile=shared.keyfile, database_name=shared.database_name,
        log_path=Path(tempfile.mkdtemp(prefix="broker-log-")) / "broker.log",
        extra_env={"PORTAL_MQTT_AUTH_CACHE_MS": "1500"},
    )
    broker.start()
    yield broker
    broker.stop()


def test_a_secret_rotated_after_the_broker_cached_it_is_bad_username_or_password(
    caching_broker, start_worker, device
):
    start_worker(caching_broker)
    assert run(device).outcome == Outcome.ACCEPTED  # the broker now holds the old secret
    device.rotate_secret()
    check = run(device)
    assert check.outcome == Outcome.REFUSED_BAD_CREDENTIALS
    assert check.connack_code == 4
    assert "rotated" in check.hint
    time.sleep(1.6)  # the broker's cache expires
    assert run(device).outcome == Outcome.ACCEPTED


# --- faults on the way -----------------------------------------------------------------------


def test_a_broker_that_is_down_gives_tcp_refused(mqtt_broker, start_worker, device):
    start_worker(mqtt_broker, PORTAL_MQTT_PORT=free_port(), PORTAL_MQTT_TLS_PORT="")
    check = run(device)
    assert check.outcome == Outcome.TCP_REFUSED
    assert check.status == CheckStatus.FAILED
    assert "Connection refused" in check.reason


def test_an_unresolvable_broker_host_says_so(mqtt_broker, start_worker, device):
    start_worker(mqtt_broker, PORTAL_MQTT_HOST="nonexistent.invalid")
    assert run(device).outcome == Outcome.NAME_NOT_RESOLVED


def test_a_wrong_ca_is_a_tls_failure(mqtt_broker, start_worker, device, tmp_path):
    wrong_ca = write_ca(make_ca("Not the deployment's CA"), tmp_path / "wrong-ca.pem")
    start_worker(mqtt_broker, PORTAL_MQTT_CA_FILE=wrong_ca)
    check = run(device)
    assert check.outcome == Outcome.TLS_UNTRUSTED
    assert "certificate" in check.reason


def test_without_a_ca_file_the_check_trusts_the_system_store(
    mqtt_broker, start_worker, device, tmp_path
):
    # A deployment whose broker has a public certificate has no CA file of its own: the check
    # uses the system's trust store, which does not know the development CA.
    start_worker(mqtt_broker, PORTAL_MQTT_CA_FILE=tmp_path / "no-such-ca.pem")
    check = run(device)
    assert check.outcome == Outcome.TLS_UNTRUSTED


def test_a_broker_that_never_answers_gives_no_connack(
    mqtt_broker, start_worker, device, silent_server
):
    start_worker(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port, PORTAL_MQTT_TLS_PORT="",
                 PORTAL_CHECK_TIMEOUT=1)
    check = run(device)
    assert check.outcome == Outcome.NO_CONNACK
    assert 1000 <= check.latencies["total"] < 3000


def test_a_malformed_client_id_is_identifier_rejected_by_the_real_broker(mqtt_broker, device):
    """The portal never renders such a clientId; a device that builds its own can."""
    from devices.connection_check import run_connection_check

    params = device.connection_params(ConnectionOptions(securemode=3))
    result = run_connection_check(
        mqtt_broker.host, mqtt_broker.port, "dev-1|securemode=9,signmethod=hmacsha256|",
        params["mqttUsername"], params["mqttPassword"], topic="/a1B2c3D4e5F/sensor-001/x",
        timeout=2,
    )
    assert (result.outcome, result.connack_code) == (Outcome.REFUSED_IDENTIFIER, 2)


def test_a_broker_that_cannot_read_the_registry_is_server_unavailable(
    mqtt_broker, device, tmp_path
):
    """A second broker on a copy of the database whose device table then disappears."""
    import dataclasses
    import sqlite3

    from devices.connection_check import run_connection_check

    copy = tmp_path / "registry.sqlite3"
    source, target = sqlite3.connect(connection.settings_dict["NAME"]), sqlite3.connect(copy)
    source.backup(target)  # also what sits in the write-ahead log
    source.close()
    target.close()
    broken = dataclasses.replace(
        mqtt_broker, port=free_port(), tls_port=free_port(), process=None,
        log_path=tmp_path / "broken-broker.log", database_name=str(copy),
    ).start()
    try:
        db = sqlite3.connect(copy)
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("DROP TABLE devices_device")
        db.commit()
        db.close()
        params = device.connection_params(ConnectionOptions(securemode=3))
        result = run_connection_check(
            broken.host, broken.port, params["mqttClientId"], params["mqttUsername"],
            params["mqttPassword"], topic="/a1B2c3D4e5F/sensor-001/x", timeout=2,
        )
        assert (result.outcome, result.connack_code) == (Outcome.REFUSED_SERVER_UNAVAILABLE, 3)
        assert "registry unavailable" in broken.log_since(0)
    finally:
        broken.stop()


# --- a live device ---------------------------------------------------------------------------


def test_an_online_device_is_only_checked_with_force_and_the_check_replaces_it(
    mqtt_broker, start_worker, device
):
    start_worker(mqtt_broker)
    params = device.connection_params(ConnectionOptions(securemode=3))
    disconnected = threading.Event()
    live = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=params["mqttClientId"])
    live.username_pw_set(params["mqttUsername"], params["mqttPassword"])
    live.on_disconnect = lambda *args: disconnected.set()
    live.connect(mqtt_broker.host, mqtt_broker.port)
    live.loop_start()
    try:
        deadline = time.monotonic() + 5
        while device.status != DeviceStatus.ONLINE:
            assert time.monotonic() < deadline, "the broker never marked the device online"
            time.sleep(0.05)
            device.refresh_from_db()
        with pytest.raises(DeviceOnlineError):
            request_check(device)
        assert not ConnectionCheck.objects.exists()
        check = run(device, force=True)
        assert check.outcome == Outcome.ACCEPTED
        assert disconnected.wait(5), "the live connection was not replaced"
    finally:
        live.loop_stop()
        live.disconnect()


def test_checks_one_right_after_another_are_not_taken_for_an_online_device(
    mqtt_broker, start_worker, device
):
    """A check connects as the device, and the broker records its disconnect a moment after the
    check has finished: "Test connection" pressed again at once must not meet "device online"."""
    start_worker(mqtt_broker)
    for _ in range(5):
        device = Device.objects.get(pk=device.pk)
        check = wait_finished(request_check(device, options=ConnectionOptions(securemode=3)))
        assert check.outcome == Outcome.ACCEPTED, check.reason


# --- nothing lost, nothing stuck -------------------------------------------------------------


def test_a_killed_worker_leaves_no_check_running(
    mqtt_broker, start_worker, device, silent_server, client, owner
):
    hanging = start_worker(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port,
                           PORTAL_MQTT_TLS_PORT="", PORTAL_CHECK_TIMEOUT=60)
    stuck = wait_status(request_check(device), CheckStatus.RUNNING)
    assert stuck.runner.endswith(f":{hanging.pid}")
    hanging.stop(kill=True)

    # Polling the check shows it interrupted at once (not after its 190 s maximum runtime).
    client.force_login(owner)
    body = client.get(f"/api/v1/checks/{stuck.pk}").json()
    assert body["status"] == "failed"
    assert body["outcome"] == "interrupted"
    assert "worker" in body["reason"]

    # A new worker runs the next check of the device (nothing waits on the dead one).
    start_worker(mqtt_broker)
    assert run(device).outcome == Outcome.ACCEPTED


def test_a_new_worker_finishes_off_a_check_its_dead_predecessor_left_running(
    mqtt_broker, start_worker, device, silent_server
):
    hanging = start_worker(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port,
                           PORTAL_MQTT_TLS_PORT="", PORTAL_CHECK_TIMEOUT=60)
    stuck = wait_status(request_check(device), CheckStatus.RUNNING)
    hanging.stop(kill=True)
    start_worker(mqtt_broker)
    second = run(device)
    stuck.refresh_from_db()
    assert (stuck.status, stuck.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)
    assert second.outcome == Outcome.ACCEPTED
    assert stuck.finished_at <= second.started_at


def test_two_checks_of_one_device_run_one_after_the_other(
    mqtt_broker, start_worker, device, silent_server
):
    for _ in range(2):
        start_worker(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port, PORTAL_MQTT_TLS_PORT="",
                     PORTAL_CHECK_TIMEOUT=1)
    first, second = request_check(device), request_check(device)
    first, second = wait_finished(first), wait_finished(second)
    assert first.outcome == second.outcome == Outcome.NO_CONNACK
    earlier, later = sorted([first, second], key=lambda c: c.started_at)
    assert later.started_at >= earlier.finished_at
    assert earlier.runner != later.runner  # two workers took them, and still did not overlap


def test_stale_running_checks_from_another_host_are_failed_by_age(device, settings):
    settings.CHECK_STEP_TIMEOUT = 5  # a check can run 3 * 5 + 10 = 25 s
    now = timezone.now()
    old = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.RUNNING, runner="elsewhere:1",
        started_at=now - timezone.timedelta(seconds=26),
    )
    young = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.RUNNING, runner="elsewhere:1",
        started_at=now - timezone.timedelta(seconds=20),
    )
    assert ConnectionCheck.objects.reap_stale(now=now) == 1
    old.refresh_from_db()
    young.refresh_from_db()
    assert (old.status, old.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)
    assert young.status == CheckStatus.RUNNING


def test_a_dead_worker_in_another_pid_namespace_of_this_host_is_judged_by_age_only(device):
    # Containers may share a host name but not their processes: a process id from another
    # PID namespace says nothing here, so only age can fail that check.
    gone_pid = 4_194_304 + 1  # above Linux's largest pid (pid_max is at most 2**22): never alive
    other_namespace = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.RUNNING, started_at=timezone.now(),
        runner=f"{socket.gethostname()}/pid:[1]:{gone_pid}",
    )
    same_scope = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.RUNNING, started_at=timezone.now(),
        runner=f"{process_scope()}:{gone_pid}",
    )
    assert ConnectionCheck.objects.reap_stale() == 1
    other_namespace.refresh_from_db()
    same_scope.refresh_from_db()
    assert other_namespace.status == CheckStatus.RUNNING
    assert (same_scope.status, same_scope.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)
