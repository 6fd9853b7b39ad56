"""The worker's task rows (django_tasks_db's DBTaskResult): a killed worker's rows are failed
where the checks are reaped, a zombie is dead, and finished rows are pruned with the checks."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult, get_date_max

from devices.connection_check import Outcome
from devices.models import CheckStatus, ConnectionCheck, _process_alive, process_scope
from devices.task_results import task_max_runtime, worker_id
from devices.tasks import request_check
from tests.broker_fixtures import DB_TASKS, RunWorker, wait_status, worker_env

GONE_PID = 4_194_304 + 1  # above Linux's largest pid (pid_max is at most 2**22): never alive


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.fixture
def zombie():
    """The pid of a child that has exited and is not reaped yet."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _state(child.pid) != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    yield child.pid
    child.wait()


def _task_row(status="RUNNING", worker=None, started=None, finished=None):
    return DBTaskResult.objects.create(
        task_path="devices.tasks.run_check",
        args_kwargs={"args": [0], "kwargs": {}},
        backend_name="default",
        run_after=get_date_max(),
        status=status,
        worker_ids=[worker] if worker else [],
        started_at=started or timezone.now(),
        finished_at=finished,
    )


def test_a_zombie_process_counts_as_dead(zombie):
    assert _process_alive(zombie) is False
    assert _process_alive(os.getpid()) is True
    assert _process_alive(GONE_PID) is False


def test_a_check_of_a_worker_that_is_now_a_zombie_is_reaped_at_once(device, zombie):
    check = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.RUNNING, started_at=timezone.now(),
        runner=f"{process_scope()}:{zombie}",
    )
    assert ConnectionCheck.objects.reap_stale() == 1
    check.refresh_from_db()
    assert (check.status, check.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)


def test_the_task_row_of_a_reaped_check_is_failed_with_it(device):
    row = _task_row(worker="some-random-worker-id")
    check = ConnectionCheck.objects.create(
        device=device, status=CheckStatus.RUNNING, started_at=timezone.now(),
        runner=f"{process_scope()}:{GONE_PID}", task_id=str(row.id),
    )
    assert ConnectionCheck.objects.reap_stale() == 1
    row.refresh_from_db()
    check.refresh_from_db()
    assert check.status == CheckStatus.FAILED
    assert row.status == "FAILED"
    assert row.finished_at is not None
    assert row.exception_class_path == "devices.task_results.WorkerStopped"
    assert "stopped before it finished" in row.traceback


def test_task_rows_of_dead_workers_here_fail_and_those_of_live_ones_stay(device, zombie):
    scope = worker_id().rpartition(":")[0]
    dead = _task_row(worker=f"{scope}:{GONE_PID}")
    of_zombie = _task_row(worker=f"{scope}:{zombie}")
    alive = _task_row(worker=f"{scope}:{os.getpid()}")
    elsewhere = _task_row(worker="wffffffffffffffff:1")  # another host: judged by age only
    waiting = ConnectionCheck.objects.create(device=device, task_id=str(dead.id))  # still queued
    from devices.task_results import settle_task_rows

    assert settle_task_rows(force=True) == 2
    statuses = dict(DBTaskResult.objects.values_list("id", "status"))
    assert statuses == {dead.id: "FAILED", of_zombie.id: "FAILED", alive.id: "RUNNING",
                        elsewhere.id: "RUNNING"}
    waiting.refresh_from_db()
    assert (waiting.status, waiting.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)


def test_task_rows_nobody_can_judge_fail_once_older_than_a_task_can_run(db, settings):
    settings.CHECK_STEP_TIMEOUT = 5  # a check 25 s, a task 4 × 25 = 100 s
    now = timezone.now()
    old = _task_row(worker="elsewhere", started=now - timezone.timedelta(seconds=101))
    young = _task_row(worker="elsewhere", started=now - timezone.timedelta(seconds=99))
    assert task_max_runtime() == 100
    from devices.task_results import settle_task_rows

    assert settle_task_rows(now=now, force=True) == 1
    old.refresh_from_db()
    young.refresh_from_db()
    assert (old.status, young.status) == ("FAILED", "RUNNING")


def test_prunechecks_deletes_finished_task_rows_older_than_the_retention(db, settings):
    settings.CHECK_RETENTION_DAYS = 30
    now = timezone.now()
    days = lambda n: now - timezone.timedelta(days=n)  # noqa: E731
    old_ok = _task_row("SUCCESSFUL", started=days(31), finished=days(31))
    old_failed = _task_row("FAILED", started=days(40), finished=days(40))
    recent = _task_row("SUCCESSFUL", started=days(29), finished=days(29))
    running = _task_row("RUNNING", worker=f"{worker_id().rpartition(':')[0]}:{os.getpid()}",
                        started=timezone.now())
    ready = _task_row("READY")

    out = io.StringIO()
    call_command("prunechecks", "--dry-run", stdout=out)
    assert "2 finished task rows older than 30 days would be deleted" in out.getvalue()
    assert DBTaskResult.objects.count() == 5

    call_command("prunechecks", stdout=io.StringIO())
    assert set(DBTaskResult.objects.values_list("id", flat=True)) == {recent.id, running.id, ready.id}
    assert not DBTaskResult.objects.filter(id__in=[old_ok.id, old_failed.id]).exists()


@pytest.mark.broker
def test_a_killed_runworker_leaves_neither_its_check_nor_its_task_row_running(
    mqtt_broker, device, silent_server, settings
):
    settings.TASKS = DB_TASKS
    settings.MQTT_PORT, settings.MQTT_TLS_PORT = silent_server.port, None
    worker = RunWorker(worker_env(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port,
                                  PORTAL_MQTT_TLS_PORT="", PORTAL_CHECK_TIMEOUT=60))
    try:
        check = wait_status(request_check(device), CheckStatus.RUNNING)
        row = DBTaskResult.objects.get(id=check.task_id)
        assert row.status == "RUNNING"
        assert row.worker_ids == [f"{worker_id().rpartition(':')[0]}:{worker.process.pid}"]
        worker.process.send_signal(signal.SIGKILL)  # not waited for: a zombie until stop()
        deadline = time.monotonic() + 5
        while _state(worker.process.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert ConnectionCheck.objects.reap_stale() == 1
    finally:
        worker.stop(kill=True)
    check.refresh_from_db()
    row.refresh_from_db()
    assert (check.status, check.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)
    assert row.status == "FAILED"


# -- a fleet task whose worker died ---------------------------------------------------------------


def _fleet_checks(product, statuses, task_id):
    from devices.models import Device

    checks = []
    for index, status in enumerate(statuses):
        device = Device.objects.create(product=product, device_id=f"fleet-dead-{index}")
        checks.append(ConnectionCheck.objects.create(
            device=device, status=status, task_id=task_id,
            started_at=None if status == CheckStatus.QUEUED else timezone.now(),
            runner="" if status == CheckStatus.QUEUED else f"{process_scope()}:{GONE_PID}",
        ))
    return checks


def _fleet_row(worker):
    row = _task_row(worker=worker)
    DBTaskResult.objects.filter(pk=row.pk).update(task_path="devices.tasks.run_fleet_checks")
    return row


@pytest.mark.django_db
def test_the_unstarted_checks_of_a_fleet_task_killed_mid_sweep_are_queued_again(
    product, monkeypatch
):
    from devices import task_results, tasks

    queued_again = []
    monkeypatch.setattr(tasks, "_enqueue_fleet", queued_again.append)
    # The scan for dead workers ran a moment ago (by another call): the task's row is failed
    # through its reaped check, and its queued checks must not be forgotten for that.
    monkeypatch.setattr(task_results, "_last_scan", [time.monotonic()])
    row = _fleet_row(f"{worker_id().rpartition(':')[0]}:{GONE_PID}")
    running, done, first, second = _fleet_checks(
        product, [CheckStatus.RUNNING, CheckStatus.SUCCEEDED, CheckStatus.QUEUED,
                  CheckStatus.QUEUED], str(row.id))

    assert ConnectionCheck.objects.reap_stale() == 1
    statuses = dict(ConnectionCheck.objects.values_list("pk", "status"))
    assert statuses == {running.pk: CheckStatus.FAILED, done.pk: CheckStatus.SUCCEEDED,
                        first.pk: CheckStatus.QUEUED, second.pk: CheckStatus.QUEUED}
    assert queued_again == [[first.pk, second.pk]]
    row.refresh_from_db()
    assert row.status == "FAILED"


@pytest.mark.django_db
def test_a_fleet_task_that_died_before_running_any_check_fails_them_as_interrupted(
    product, monkeypatch
):
    """No check of it ran, so nothing says another try would get further: its checks end."""
    from devices import tasks
    from devices.task_results import settle_task_rows

    queued_again = []
    monkeypatch.setattr(tasks, "_enqueue_fleet", queued_again.append)
    row = _fleet_row(f"{worker_id().rpartition(':')[0]}:{GONE_PID}")
    checks = _fleet_checks(product, [CheckStatus.QUEUED] * 3, str(row.id))

    assert settle_task_rows(force=True) == 1
    assert queued_again == []
    for check in checks:
        check.refresh_from_db()
        assert (check.status, check.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)


@pytest.mark.broker
def test_a_sweep_whose_worker_was_killed_finishes_on_the_restarted_worker(
    mqtt_broker, product, silent_server, settings
):
    """A fleet task of more checks than its threads and look-ahead hold: killed while its first
    checks wait for a broker that never answers. The reaper fails those (interrupted) and queues
    the rest again; a new worker runs them against the real broker."""
    from devices.models import Device
    from devices.tasks import FLEET_CONCURRENCY, FLEET_LOOKAHEAD, request_fleet_checks

    settings.TASKS = DB_TASKS
    count = FLEET_CONCURRENCY + FLEET_LOOKAHEAD + 20
    devices = [Device.objects.create(product=product, device_id=f"sweep-{i:03d}")
               for i in range(count)]
    checks = request_fleet_checks(devices)
    worker = RunWorker(worker_env(mqtt_broker, PORTAL_MQTT_PORT=silent_server.port,
                                  PORTAL_MQTT_TLS_PORT="", PORTAL_CHECK_TIMEOUT=60))
    try:
        deadline = time.monotonic() + 15
        while ConnectionCheck.objects.filter(status=CheckStatus.RUNNING).count() < \
                FLEET_CONCURRENCY:
            assert time.monotonic() < deadline, "the fleet task never claimed its checks"
            time.sleep(0.05)
        worker.process.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _state(worker.process.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        interrupted = ConnectionCheck.objects.reap_stale()
    finally:
        worker.stop(kill=True)
    assert 0 < interrupted < count
    assert ConnectionCheck.objects.filter(status=CheckStatus.QUEUED).count() == count - interrupted

    worker = RunWorker(worker_env(mqtt_broker))
    try:
        deadline = time.monotonic() + 60
        while ConnectionCheck.objects.exclude(
                status__in=[CheckStatus.SUCCEEDED, CheckStatus.FAILED]).exists():
            assert time.monotonic() < deadline, "the checks queued again never finished"
            time.sleep(0.1)
    finally:
        worker.stop()
    outcomes = ConnectionCheck.objects.filter(pk__in=[c.pk for c in checks]).values_list(
        "outcome", flat=True)
    assert sorted(set(outcomes)) == [Outcome.ACCEPTED, Outcome.INTERRUPTED]
    assert list(outcomes).count(Outcome.ACCEPTED) == count - interrupted


@pytest.mark.django_db
def test_a_dead_fleet_task_settled_by_another_process_meanwhile_is_not_settled_again(
    product, monkeypatch
):
    """Two reapers (the restarted worker, checkconnections) saw the same dead task RUNNING; the
    other one's UPDATE came first: its checks are that one's to queue again, not this one's."""
    from django.db.models import QuerySet

    from devices import tasks
    from devices.task_results import settle_task_rows

    queued_again = []
    monkeypatch.setattr(tasks, "_enqueue_fleet", queued_again.append)
    row = _fleet_row(f"{worker_id().rpartition(':')[0]}:{GONE_PID}")
    _fleet_checks(product, [CheckStatus.RUNNING, CheckStatus.QUEUED], str(row.id))
    original = QuerySet.update

    def other_process_first(queryset, **values):
        if queryset.model is DBTaskResult and values.get("status") == "FAILED" \
                and not other_process_first.done:
            other_process_first.done = True
            original(DBTaskResult.objects.filter(pk=row.pk), status="FAILED")
        return original(queryset, **values)

    other_process_first.done = False
    monkeypatch.setattr(QuerySet, "update", other_process_first)
    assert settle_task_rows(task_ids=[row.id], force=True) == 0
    assert queued_again == []
    assert ConnectionCheck.objects.filter(status=CheckStatus.QUEUED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_settlement_that_fails_half_way_leaves_the_task_for_the_next_call(product, monkeypatch):
    from django.db import OperationalError

    from devices import tasks
    from devices.task_results import settle_task_rows

    row = _fleet_row(f"{worker_id().rpartition(':')[0]}:{GONE_PID}")
    running, queued = _fleet_checks(product, [CheckStatus.RUNNING, CheckStatus.QUEUED],
                                    str(row.id))

    def locked(ids):
        raise OperationalError("database is locked")

    monkeypatch.setattr(tasks, "_enqueue_fleet", locked)
    with pytest.raises(OperationalError):
        settle_task_rows(task_ids=[row.id], force=True)
    row.refresh_from_db()
    assert row.status == "RUNNING"  # nothing of it was kept
    assert set(ConnectionCheck.objects.values_list("status", flat=True)) == {
        CheckStatus.RUNNING, CheckStatus.QUEUED}

    queued_again = []
    monkeypatch.setattr(tasks, "_enqueue_fleet", queued_again.append)
    assert settle_task_rows(force=True) == 1
    assert queued_again == [[queued.pk]]
    running.refresh_from_db()
    assert (running.status, running.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)


@pytest.mark.django_db
def test_settling_a_task_row_leaves_its_checks_that_still_run(product, monkeypatch):
    """A row given to settle (a check of it was stale) whose other check is still being run by a
    live worker here: that check is not failed under it."""
    from devices import tasks
    from devices.task_results import settle_task_rows

    monkeypatch.setattr(tasks, "_enqueue_fleet", lambda ids: None)
    row = _fleet_row(f"{worker_id().rpartition(':')[0]}:{os.getpid()}")
    (live,) = _fleet_checks(product, [CheckStatus.RUNNING], str(row.id))
    ConnectionCheck.objects.filter(pk=live.pk).update(runner=f"{process_scope()}:{os.getpid()}")

    assert settle_task_rows(task_ids=[row.id]) == 1
    live.refresh_from_db()
    assert live.status == CheckStatus.RUNNING
