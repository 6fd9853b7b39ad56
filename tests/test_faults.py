"""A database write lock held longer than the lock timeout stops nothing: the worker carries on,
pages and JSON endpoints answer 503 with Retry-After, and the broker writes the status changes it
could not write once the lock is gone.

Each test holds a real SQLite write lock (``BEGIN IMMEDIATE`` on another connection) on the test
database file, longer than the lock timeout, which the processes a test starts lower with
``PORTAL_TEST_SQLITE_TIMEOUT`` (the portal waits 20 s) and the test process lowers for itself.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from contextlib import contextmanager

import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from devices.models import CheckStatus, Device, DeviceStatus
from devices.options import ConnectionOptions
from devices.tasks import request_check
from tests.broker_fixtures import (
    DB_TASKS,
    MqttTestClient,
    RunWorker,
    free_port,
    wait_finished,
    wait_status,
    worker_env,
)

LOCK_TIMEOUT_S = 0.3


@contextmanager
def write_lock():
    """Hold the test database's write lock (as a long migration or a stuck writer would)."""
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture
def short_lock_timeout(transactional_db):
    """This process waits LOCK_TIMEOUT_S for a lock instead of 20 s (and commits what it writes,
    so that it holds no lock of its own)."""
    options = connection.settings_dict.setdefault("OPTIONS", {})
    previous = options.get("timeout")
    options["timeout"] = LOCK_TIMEOUT_S
    connection.close()
    yield
    options["timeout"] = previous
    connection.close()


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what}")
        time.sleep(0.05)


# --- the web server ---------------------------------------------------------------------------


def _assert_busy_json(response):
    assert response.status_code == 503, response.content[:500]
    assert int(response["Retry-After"]) > 0
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["code"] == "database_busy" and error["field"] is None
    assert "try again" in error["message"].lower()


def test_an_api_write_answers_503_with_retry_after_while_the_database_is_locked(
    client, owner, device, short_lock_timeout
):
    client.force_login(owner)
    url = f"/api/v1/products/{device.product.product_id}/devices/{device.device_id}/checks"
    with write_lock():
        _assert_busy_json(client.post(url, data="{}", content_type="application/json"))
    assert client.post(url, data="{}", content_type="application/json").status_code == 202


def test_the_broker_hook_answers_503_with_retry_after_while_the_database_is_locked(
    client, device, settings, short_lock_timeout
):
    settings.BROKER_HOOK_TOKEN = "hook-token"
    # /mqtt/events counts only connections /mqtt/auth accepted (issue 9): accept one first.
    params = device.connection_params(ConnectionOptions(securemode=3))
    accepted = client.post(
        "/mqtt/auth", content_type="application/json", HTTP_AUTHORIZATION="Bearer hook-token",
        data=json.dumps({"clientid": params["mqttClientId"], "username": params["mqttUsername"],
                         "password": params["mqttPassword"], "peerhost": "10.0.0.7"}),
    )
    assert accepted.json()["result"] == "allow"
    event = {"event": "client.connected", "clientid": params["mqttClientId"],
             "connected_at": 1700000000000, "username": params["mqttUsername"],
             "peername": "10.0.0.7:51234"}

    def send():
        return client.post("/mqtt/events", data=json.dumps(event), content_type="application/json",
                           HTTP_AUTHORIZATION="Bearer hook-token")

    with write_lock():
        _assert_busy_json(send())
    assert Device.objects.get(pk=device.pk).status == DeviceStatus.INACTIVE
    assert send().status_code == 204
    assert Device.objects.get(pk=device.pk).status == DeviceStatus.ONLINE


@pytest.mark.parametrize("language, words", [
    ("en", ["Busy, try again", "try again in a few seconds"]),
    ("zh-hans", ["正忙，请重试", "请几秒钟后重试"]),
])
def test_a_page_write_answers_a_503_page_while_the_database_is_locked(
    client, owner, device, short_lock_timeout, language, words
):
    client.force_login(owner)
    url = f"/products/{device.product.product_id}/devices/{device.device_id}/enabled/"
    with write_lock():
        response = client.post(url, {"enabled": "false"}, HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for word in words:
        assert word in page
    assert Device.objects.get(pk=device.pk).enabled is True
    assert client.post(url, {"enabled": "false"}).status_code == 302
    assert Device.objects.get(pk=device.pk).enabled is False


# --- the worker ------------------------------------------------------------------------------


@pytest.mark.broker
def test_the_worker_survives_a_locked_database_and_then_runs_a_check(
    mqtt_broker, device, settings
):
    settings.TASKS = DB_TASKS
    settings.MQTT_HOST, settings.MQTT_PORT = mqtt_broker.host, mqtt_broker.port
    settings.MQTT_TLS_PORT, settings.MQTT_CA_FILE = mqtt_broker.tls_port, mqtt_broker.ca_file
    worker = RunWorker(worker_env(mqtt_broker, PORTAL_TEST_SQLITE_TIMEOUT=LOCK_TIMEOUT_S))
    try:
        with write_lock():
            _wait_for(lambda: worker.log().count("database is locked") >= 3
                      or worker.process.poll() is not None, 10, "the worker met the lock thrice")
            assert worker.process.poll() is None, worker.log()[-3000:]
        check = wait_finished(request_check(device))
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert check.status == CheckStatus.SUCCEEDED, check.reason
        assert "carries on" in worker.log()
    finally:
        worker.stop()


@pytest.mark.broker
def test_a_task_that_ends_while_the_database_is_locked_has_its_result_written_afterwards(
    mqtt_broker, device, settings, silent_server
):
    settings.TASKS = DB_TASKS
    settings.MQTT_PORT, settings.MQTT_TLS_PORT = silent_server.port, None
    worker = RunWorker(worker_env(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port,
                                  PORTAL_MQTT_TLS_PORT="", PORTAL_CHECK_TIMEOUT=1,
                                  PORTAL_TEST_SQLITE_TIMEOUT=LOCK_TIMEOUT_S))
    try:
        check = wait_status(request_check(device), CheckStatus.RUNNING)
        with write_lock():  # the check (no CONNACK within 1 s) ends while this is held
            _wait_for(lambda: "result is written when it is free" in worker.log()
                      or worker.process.poll() is not None, 15, "the worker met the lock")
            assert DBTaskResult.objects.get(id=check.task_id).status == "RUNNING"
        _wait_for(lambda: DBTaskResult.objects.get(id=check.task_id).status != "RUNNING", 10,
                  "the task's result was written")
        assert worker.process.poll() is None, worker.log()[-3000:]
    finally:
        worker.stop()


# --- the broker's status writes --------------------------------------------------------------


@pytest.fixture
def impatient_broker(_mqtt_broker_process, transactional_db, tmp_path):
    """A second real embedded broker on the test database that waits LOCK_TIMEOUT_S for locks."""
    broker = dataclasses.replace(
        _mqtt_broker_process, port=free_port(), tls_port=free_port(), process=None,
        log_path=tmp_path / "broker.log",
        extra_env={"PORTAL_TEST_SQLITE_TIMEOUT": str(LOCK_TIMEOUT_S)},
    )
    broker.start()
    yield broker
    broker.stop()


def _client(broker, device):
    params = device.connection_params(ConnectionOptions(securemode=3))
    client = MqttTestClient(params["mqttClientId"], params["mqttUsername"], params["mqttPassword"],
                            host=broker.host, port=broker.port)
    assert client.connect() == 0
    return client


@pytest.mark.broker
def test_status_changes_the_broker_could_not_write_are_written_once_the_lock_is_gone(
    impatient_broker, product
):
    stays = Device.objects.create(product=product, device_id="stays-online")
    leaves = Device.objects.create(product=product, device_id="comes-and-goes")
    mark = impatient_broker.log_mark()
    clients = []
    try:
        with write_lock():
            clients = [_client(impatient_broker, stays), _client(impatient_broker, leaves)]
            impatient_broker.wait_for_log(mark, "Could not record the status")
            # It went offline after its "went online" had failed to be written: both must land.
            clients[1].close()
            again = impatient_broker.log_mark()
            impatient_broker.wait_for_log(again, "Could not record the status")
            assert Device.objects.get(pk=stays.pk).status == DeviceStatus.INACTIVE  # still locked
        _wait_for(lambda: Device.objects.get(pk=leaves.pk).status == DeviceStatus.OFFLINE
                  and Device.objects.get(pk=stays.pk).status == DeviceStatus.ONLINE, 10,
                  "the kept status changes were written")
    finally:
        for client in clients:
            client.close()
    leaves.refresh_from_db()
    assert leaves.first_activated_at is not None and leaves.last_online_at is not None
    assert Device.objects.get(pk=stays.pk).first_activated_at is not None
