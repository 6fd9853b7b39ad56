"""The background worker's own rows (django_tasks_db's ``DBTaskResult``): settled when their
worker died, and pruned with the checks.

django_tasks_db writes a task's row when the task starts (RUNNING) and when it returns; a worker
killed in between leaves the row RUNNING for ever, and nothing deletes finished rows unless
someone runs ``prune_db_task_results``. Here:

* ``manage.py runworker`` gives its worker an id naming its process (:func:`worker_id`), so a
  row whose worker process is gone (in this host and PID namespace) is failed at once;
* rows whose worker cannot be judged from here (another host, plain ``db_worker`` with a random
  id) are failed once older than the longest a task can take (:func:`task_max_runtime`);
* the rows of checks failed as "interrupted" by ``ConnectionCheck.objects.reap_stale`` are
  failed with them, and ``prunechecks`` deletes finished rows older than the retention;
* a dead fleet task's checks that never began are queued again (``_settle_checks_of``).
"""

from __future__ import annotations

import hashlib
import os
import time

from django.db.models import Q
from django.utils import timezone

from .models import CheckStatus, ConnectionCheck, _process_alive, check_max_runtime, process_scope

STOPPED_MESSAGE = "the worker running this task stopped before it finished"
# The scan of RUNNING rows has no index to use (django_tasks_db indexes READY rows only), so
# reap_stale, which pages call often, runs it at most this often per process.
SCAN_INTERVAL_S = 5.0
_last_scan = [float("-inf")]


class WorkerStopped(Exception):
    """Recorded as the error of a task whose worker stopped before the task finished."""


def worker_id() -> str:
    """A ``db_worker --worker-id`` that names this process: a digest of its process scope (host
    and PID namespace) and its pid, within django_tasks_db's 64 characters."""
    digest = hashlib.sha256(process_scope().encode()).hexdigest()[:16]
    return f"w{digest}:{os.getpid()}"


def task_max_runtime() -> int:
    """Seconds a task can legitimately run: ``run_check`` waits up to twice a check's runtime for
    another check of its device, then runs its own (the only task there is), plus slack."""
    return 4 * check_max_runtime()


def _dead_here(worker_ids, scope_prefix) -> bool:
    last = worker_ids[-1] if isinstance(worker_ids, list) and worker_ids else ""
    prefix, _, pid = str(last).rpartition(":")
    return prefix == scope_prefix and pid.isdigit() and not _process_alive(int(pid))


def settle_task_rows(now=None, task_ids=(), force=False) -> int:
    """Fail the RUNNING task rows ``task_ids`` and those whose worker is dead (or that are older
    than :func:`task_max_runtime`), and settle their unfinished checks (``_settle_checks_of``).
    The scan for dead workers runs at most every SCAN_INTERVAL_S unless ``force``. Returns how
    many task rows were failed."""
    from django_tasks_db.compat import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    now = now or timezone.now()
    ids = {str(task_id) for task_id in task_ids}
    scanned = force or time.monotonic() - _last_scan[0] >= SCAN_INTERVAL_S
    if scanned:
        _last_scan[0] = time.monotonic()
        cutoff = now - timezone.timedelta(seconds=task_max_runtime())
        scope_prefix = worker_id().rpartition(":")[0]
        for row in DBTaskResult.objects.running().only("id", "worker_ids", "started_at"):
            if row.started_at is None or row.started_at < cutoff or _dead_here(
                row.worker_ids, scope_prefix
            ):
                ids.add(str(row.id))
    if not ids:
        return 0
    from django.db import transaction

    # One transaction: the rows this call fails, their checks and the checks queued again commit
    # together (a stop half-way would leave a failed row with checks no later call looks at).
    # Each row is failed by a conditional UPDATE, and only the rows this call failed have their
    # checks settled here: another process settling the same dead worker at the same moment (the
    # restarted worker, checkconnections' reaper) settles the others, never the same twice.
    with transaction.atomic():
        mine = [task_id for task_id in sorted(ids) if DBTaskResult.objects.filter(
            pk=task_id, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED,
            finished_at=now,
            return_value=None,
            exception_class_path=f"{WorkerStopped.__module__}.{WorkerStopped.__qualname__}",
            traceback=f"{WorkerStopped.__module__}.{WorkerStopped.__qualname__}: "
                      f"{STOPPED_MESSAGE}\n",
        )]
        if mine:
            paths = DBTaskResult.objects.filter(pk__in=mine).values_list("id", "task_path")
            _settle_checks_of({str(task_id): path for task_id, path in paths}, now)
    return len(mine)


def _settle_checks_of(tasks: dict[str, str], now) -> None:
    """The unfinished checks of these dead tasks (task id → task path). Running ones whose
    worker is gone (:meth:`ConnectionCheck.is_interrupted`) fail as interrupted. The queued
    checks of a fleet task that had claimed some of its checks never began: they are queued
    again as a new fleet task, so that a worker killed in the middle of a sweep (and restarted by
    runportal) does not strand them; each time that happens the checks it had claimed fail, so
    this ends. Any other queued check of a dead task (one waiting for another check of its
    device, or a fleet task that died before claiming any) fails as interrupted."""
    from .connection_check import Outcome
    from .tasks import FLEET_CHUNK, _enqueue_fleet, run_fleet_checks

    fleet = [task_id for task_id, path in tasks.items() if path == run_fleet_checks.module_path]
    progressed = set(
        ConnectionCheck.objects.filter(task_id__in=fleet).exclude(status=CheckStatus.QUEUED)
        .order_by().values_list("task_id", flat=True).distinct()
    )
    again = sorted(ConnectionCheck.objects.filter(
        task_id__in=progressed, status=CheckStatus.QUEUED).values_list("pk", flat=True))
    running = ConnectionCheck.objects.filter(
        task_id__in=list(tasks), status=CheckStatus.RUNNING
    ).only("pk", "status", "runner", "started_at")
    ended = [check.pk for check in running if check.is_interrupted(now)]
    ConnectionCheck.objects.filter(
        Q(pk__in=ended, status=CheckStatus.RUNNING)
        | Q(task_id__in=list(tasks), status=CheckStatus.QUEUED)
    ).exclude(pk__in=again).update(
        status=CheckStatus.FAILED,
        outcome=Outcome.INTERRUPTED,
        reason="the worker running this check stopped before it finished",
        finished_at=now,
    )
    for start in range(0, len(again), FLEET_CHUNK):
        _enqueue_fleet(again[start:start + FLEET_CHUNK])


def prune_task_rows(cutoff, dry_run=False) -> int:
    """Delete the finished task rows (succeeded or failed) that finished before ``cutoff``."""
    from django_tasks_db.models import DBTaskResult

    old = DBTaskResult.objects.finished().filter(finished_at__lt=cutoff)
    if dry_run:
        return old.count()
    deleted, _ = old.delete()
    return deleted
