"""Fleet checks (``request_fleet_checks`` / ``run_fleet_checks``, what checkconnections queues):
many checks per task, run at once, results written in bulk, the rules of a single check kept."""

import io
import time
import types

import pytest
from django.core.management import call_command

from devices import tasks
from devices.choices import Outcome
from devices.models import CheckStatus, ConnectionCheck, Device, DeviceStatus
from devices.tasks import DeviceOnlineError, request_fleet_checks


@pytest.fixture
def devices(product):
    return [Device.objects.create(product=product, device_id=f"fleet-{i:03d}") for i in range(24)]


def test_a_claim_leaves_a_device_that_runs_a_check_to_wait(devices, django_assert_max_num_queries):
    busy, free = devices[:2]
    ConnectionCheck.objects.create(device=busy, status=CheckStatus.RUNNING,
                                   runner="elsewhere:1", started_at=busy.created_at)
    queued = [ConnectionCheck.objects.create(device=d) for d in (busy, free, free)]
    deferred = []
    with django_assert_max_num_queries(6):  # one transaction for the whole batch
        claimed = tasks._claim_loaded(tasks._load_queued([c.pk for c in queued]), deferred)
    # The busy device's check waits; of two checks of one device only the first runs now.
    assert [c.pk for c in claimed] == [queued[1].pk]
    assert deferred == [queued[0].pk, queued[2].pk]
    assert ConnectionCheck.objects.get(pk=queued[1].pk).status == CheckStatus.RUNNING
    assert ConnectionCheck.objects.get(pk=queued[0].pk).status == CheckStatus.QUEUED


def test_an_online_device_needs_force(devices):
    Device.objects.filter(pk=devices[0].pk).update(status=DeviceStatus.ONLINE)
    devices[0].refresh_from_db()
    with pytest.raises(DeviceOnlineError):
        request_fleet_checks(devices[:1])
    assert not ConnectionCheck.objects.exists()


@pytest.mark.broker
def test_checks_run_at_once_and_each_ends_with_its_result(
    transactional_db, devices, silent_server, settings
):
    """Against a server that never answers, each check waits its CONNACK timeout (1 s): run one
    after the other, 24 checks would take 24 s; a fleet task runs FLEET_CONCURRENCY at once."""
    settings.MQTT_HOST, settings.MQTT_PORT, settings.MQTT_TLS_PORT = (
        "127.0.0.1", silent_server.port, None)
    settings.CHECK_STEP_TIMEOUT = 1
    started = time.monotonic()
    checks = request_fleet_checks(devices)  # ImmediateBackend: the tasks run here, now
    elapsed = time.monotonic() - started
    assert elapsed < 24 / tasks.FLEET_CONCURRENCY + 4, elapsed
    stored = ConnectionCheck.objects.filter(pk__in=[c.pk for c in checks])
    assert {(c.status, c.outcome) for c in stored} == {(CheckStatus.FAILED, Outcome.NO_CONNACK)}
    assert all(c.finished_at and c.started_at for c in stored)


def test_checkconnections_over_a_fleet_succeeds_with_few_tasks(mqtt_broker, start_worker, product):
    Device.objects.bulk_create(
        [Device(product=product, device_id=f"many-{i:03d}") for i in range(150)])
    start_worker(mqtt_broker)
    out = io.StringIO()
    call_command("checkconnections", "--product", product.product_id, stdout=out)
    assert "Summary: 150 checked, 150 succeeded, 0 failed." in out.getvalue()
    task_ids = set(ConnectionCheck.objects.values_list("task_id", flat=True))
    assert len(task_ids) == -(-150 // tasks.FLEET_CHUNK)  # one task per chunk, not per check


def test_a_task_past_its_budget_hands_the_rest_to_a_new_task(
    transactional_db, devices, silent_server, settings, monkeypatch
):
    """However slow the checks, a task stops claiming in time to end within task_max_runtime()."""
    from devices import task_results

    settings.MQTT_HOST, settings.MQTT_PORT, settings.MQTT_TLS_PORT = (
        "127.0.0.1", silent_server.port, None)
    settings.CHECK_STEP_TIMEOUT = 1
    handed = []
    monkeypatch.setattr(task_results, "task_max_runtime", lambda: 2 * tasks.check_max_runtime())
    monkeypatch.setattr(tasks, "_enqueue_fleet", handed.append)
    checks = ConnectionCheck.objects.bulk_create([ConnectionCheck(device=d) for d in devices])
    tasks.run_fleet_checks.call([c.pk for c in checks])
    assert handed == [[c.pk for c in checks]]  # the budget was spent at once: nothing claimed
    assert set(ConnectionCheck.objects.values_list("status", flat=True)) == {CheckStatus.QUEUED}


@pytest.mark.broker
def test_a_check_claimed_ahead_keeps_its_own_time_from_when_a_thread_takes_it(
    transactional_db, devices, silent_server, settings, monkeypatch
):
    """Checks are claimed ahead of a free thread (so the threads never wait for the database);
    one still waiting after FLEET_CLAIM_RENEW_S has its started_at renewed, so that a check
    that waited is not older than it ran (and not reaped as stale while it runs)."""
    settings.MQTT_HOST, settings.MQTT_PORT, settings.MQTT_TLS_PORT = (
        "127.0.0.1", silent_server.port, None)
    settings.CHECK_STEP_TIMEOUT = 1  # each check waits 1 s for a CONNACK that never comes
    monkeypatch.setattr(tasks, "FLEET_CONCURRENCY", 1)
    monkeypatch.setattr(tasks, "FLEET_LOOKAHEAD", 2)
    monkeypatch.setattr(tasks, "FLEET_CLAIM_RENEW_S", 0.3)
    checks = request_fleet_checks(devices[:3])  # ImmediateBackend: runs here, one at a time
    stored = sorted(ConnectionCheck.objects.filter(pk__in=[c.pk for c in checks]),
                    key=lambda c: c.finished_at)
    assert [c.outcome for c in stored] == [Outcome.NO_CONNACK] * 3
    # One after the other: the last finished about 3 s after the first started ...
    assert (stored[-1].finished_at - stored[0].started_at).total_seconds() > 2.5
    # ... but none counts more than its own second (+ a renewal period, + slack) as running.
    for check in stored:
        assert (check.finished_at - check.started_at).total_seconds() < 1 + 0.3 + 0.5, check


def test_results_are_stored_as_a_single_check_stores_them(devices):
    """The fleet's bulk write stores every result field as ``ConnectionCheck.finish`` does."""
    from django.db import connection

    from devices.connection_check import CheckResult

    result = CheckResult(Outcome.REFUSED_BAD_CREDENTIALS, connack_code=4,
                         detail="CONNACK code 4 «é»", latencies={"tcp": 0.31, "connack": 1.5})
    single, fleet = (ConnectionCheck.objects.create(device=d, status=CheckStatus.RUNNING)
                     for d in devices[:2])
    single.finish(result.outcome, result.detail, result.connack_code, result.latencies)
    tasks._store([(fleet, result)])
    columns = ", ".join(f'"{name}"' for name in
                        ["status", "outcome", "reason", "connack_code", "latencies"])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM devices_connectioncheck WHERE id IN (%s, %s) "
                       "ORDER BY id", [single.pk, fleet.pk])
        raw_single, raw_fleet = cursor.fetchall()
    assert raw_fleet == raw_single
    assert raw_fleet[:4] == ("failed", "refused_bad_credentials", "CONNACK code 4 «é»", 4)
    fleet.refresh_from_db()
    assert fleet.latencies == {"tcp": 0.31, "connack": 1.5}
    assert fleet.finished_at is not None and fleet.finished_at.tzinfo is not None


@pytest.mark.broker
def test_a_task_past_its_budget_gives_back_the_checks_it_claimed_ahead(
    transactional_db, devices, silent_server, settings, monkeypatch
):
    """The checks claimed ahead that no thread has taken are queued again and handed, with the
    unclaimed ones, to the next task; the one running finishes with its result."""
    from devices import task_results

    settings.MQTT_HOST, settings.MQTT_PORT, settings.MQTT_TLS_PORT = (
        "127.0.0.1", silent_server.port, None)
    settings.CHECK_STEP_TIMEOUT = 1
    monkeypatch.setattr(tasks, "FLEET_CONCURRENCY", 1)
    monkeypatch.setattr(tasks, "FLEET_LOOKAHEAD", 2)
    # The budget ends half a second in, while the first check waits for its CONNACK.
    monkeypatch.setattr(task_results, "task_max_runtime",
                        lambda: 2 * tasks.check_max_runtime() + 0.5)
    handed = []
    monkeypatch.setattr(tasks, "_enqueue_fleet", handed.append)
    checks = ConnectionCheck.objects.bulk_create([ConnectionCheck(device=d) for d in devices[:5]])
    tasks.run_fleet_checks.call([c.pk for c in checks])
    first, *rest = ConnectionCheck.objects.filter(pk__in=[c.pk for c in checks]).order_by("pk")
    assert (first.status, first.outcome) == (CheckStatus.FAILED, Outcome.NO_CONNACK)
    assert handed == [[c.pk for c in rest]]
    assert {(c.status, c.started_at, c.runner) for c in rest} == {(CheckStatus.QUEUED, None, "")}


def test_a_check_that_waited_for_a_thread_signs_with_the_secret_rotated_meanwhile(
    mqtt_broker, product, settings, monkeypatch
):
    """A check claimed ahead may wait for a thread; when the device's secret is rotated in
    that wait, the check connects with the new secret (as one started then would), not with the
    secret it was claimed with (that gave a false "bad credentials" for a healthy device)."""
    settings.MQTT_HOST, settings.MQTT_PORT = mqtt_broker.host, mqtt_broker.port
    settings.MQTT_TLS_PORT, settings.MQTT_CA_FILE = mqtt_broker.tls_port, mqtt_broker.ca_file
    devices = [Device.objects.create(product=product, device_id=f"wait-{i}") for i in range(3)]
    monkeypatch.setattr(tasks, "FLEET_CONCURRENCY", 1)
    monkeypatch.setattr(tasks, "FLEET_LOOKAHEAD", 4)
    monkeypatch.setattr(tasks, "FLEET_REFRESH_AFTER_S", 0.0)  # every wait counts here
    real_run = tasks._run_safely
    rotated = []

    def run_then_rotate(check):
        if not rotated:  # the first check runs while the other two wait, claimed ahead
            waiting = next(d for d in devices if d.pk != check.device_id)
            Device.objects.get(pk=waiting.pk).rotate_secret()
            rotated.append(waiting.pk)
        return real_run(check)

    monkeypatch.setattr(tasks, "_run_safely", run_then_rotate)
    checks = request_fleet_checks(devices)  # ImmediateBackend: runs here
    stored = {c.device_id: c for c in ConnectionCheck.objects.filter(pk__in=[c.pk for c in checks])}
    assert len(rotated) == 1
    assert stored[rotated[0]].outcome == Outcome.ACCEPTED, stored[rotated[0]].reason
    assert {c.outcome for c in stored.values()} == {Outcome.ACCEPTED}


def test_an_error_in_a_fleet_task_gives_back_the_checks_no_thread_took(
    transactional_db, devices, silent_server, settings, monkeypatch
):
    """When the task's own loop fails, the checks it claimed ahead are queued again for another
    task rather than run for nothing (their results could no longer be stored)."""
    settings.MQTT_HOST, settings.MQTT_PORT, settings.MQTT_TLS_PORT = (
        "127.0.0.1", silent_server.port, None)
    settings.CHECK_STEP_TIMEOUT = 1
    monkeypatch.setattr(tasks, "FLEET_CONCURRENCY", 1)
    monkeypatch.setattr(tasks, "FLEET_LOOKAHEAD", 4)
    ran = []
    monkeypatch.setattr(tasks, "_run_safely", lambda check: ran.append(check.pk) or time.sleep(1))
    queued = []
    monkeypatch.setattr(tasks, "_enqueue_fleet", lambda ids: queued.extend(ids))
    checks = request_fleet_checks(devices[:5])  # queued only: _enqueue_fleet is replaced
    ids = [c.pk for c in checks]
    assert sorted(queued) == sorted(ids)
    queued.clear()

    def broken_gather(self, want):
        raise RuntimeError("the task's database round failed")

    monkeypatch.setattr(tasks._FleetPool, "gather", broken_gather)
    with pytest.raises(RuntimeError):
        tasks.run_fleet_checks.call(ids)
    assert len(ran) <= 2  # the one a thread had taken (and maybe the next), not all five
    assert sorted(set(queued)) == sorted(set(ids) - set(ran))
    assert set(ConnectionCheck.objects.filter(pk__in=queued).values_list("status", flat=True)) \
        == {CheckStatus.QUEUED}


def test_no_empty_fleet_task_is_queued(db, monkeypatch):
    """A task past its budget hands on what is left; when the threads took the last claimed
    checks in the meantime, nothing is left and no task is queued for it."""
    queued = []
    monkeypatch.setattr(tasks, "run_fleet_checks",
                        types.SimpleNamespace(enqueue=lambda ids: queued.append(ids)))
    tasks._enqueue_fleet([])
    assert queued == []


def test_a_locked_database_at_the_tasks_start_does_not_strand_its_checks(
    devices, settings, monkeypatch
):
    """The housekeeping reap at a fleet task's start waits the lock timeout and gives up; the
    task runs its checks anyway (had it failed, they would have stayed queued for ever)."""
    import socket

    from django.db import OperationalError

    from devices.models import ConnectionCheckQuerySet

    def locked(self, now=None):
        raise OperationalError("database is locked")

    with socket.socket() as sock:  # a port nobody listens on: each check is refused at once
        sock.bind(("127.0.0.1", 0))
        settings.MQTT_HOST, settings.MQTT_PORT = "127.0.0.1", sock.getsockname()[1]
    settings.MQTT_TLS_PORT = None
    monkeypatch.setattr(ConnectionCheckQuerySet, "reap_stale", locked)
    checks = [ConnectionCheck.objects.create(device=d) for d in devices[:3]]
    tasks.run_fleet_checks.call([c.pk for c in checks])
    stored = ConnectionCheck.objects.filter(pk__in=[c.pk for c in checks])
    assert {c.status for c in stored} == {CheckStatus.FAILED}
    assert {c.outcome for c in stored} == {Outcome.TCP_REFUSED}
