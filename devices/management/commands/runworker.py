"""django_tasks_db's ``db_worker``, made to outlive a locked database (what ``runportal`` runs).

``db_worker`` 0.13 tolerates a locked database only while it looks for a task: the
``BEGIN EXCLUSIVE`` that starts that look-up is outside its ``try``, so a write lock held longer
than the SQLite timeout (20 s) raises out of its loop and the worker exits. And when storing a
task's result meets the lock, its three quick retries give up and the row stays RUNNING. Here:

* the loop is restarted after a locked-database error (the worker says so and carries on);
* a task's result is written once the database is free again, instead of being lost;
* the worker's id names its process (``devices.task_results.worker_id``), so that the row of a
  task whose worker was killed is failed at once by the check reaping;
* at start, rows and checks left running by dead workers are settled.

Every option of ``db_worker`` is accepted.
"""

from __future__ import annotations

import functools
import logging
import os
import time

from django.db import connection
from django.db.utils import OperationalError
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands import db_worker
from django_tasks_db.utils import is_locked_database_exception

from devices.models import ConnectionCheck
from devices.task_results import settle_task_rows
from devices.task_results import worker_id as own_worker_id

logger = logging.getLogger("django_tasks_db")

LOCKED_RETRY_S = 1.0  # each attempt itself waits up to the database's lock timeout


def _is_locked(error: BaseException) -> bool:
    return isinstance(error, OperationalError) and is_locked_database_exception(error)


def _close_connection():
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - a broken connection is replaced on the next query
        pass


class LockTolerantWorker(db_worker.Worker):
    def run(self) -> None:
        while True:
            try:
                return super().run()
            except OperationalError as error:
                if not _is_locked(error) or not self.running:
                    raise
                logger.warning(
                    "The database is locked (%s); the worker carries on in %.0f s.",
                    error, LOCKED_RETRY_S,
                )
                _close_connection()
                self.startup_delay = False
                time.sleep(LOCKED_RETRY_S)

    def run_task(self, db_task_result) -> None:
        for name in ("set_successful", "set_failed"):
            setattr(db_task_result, name, self._until_written(getattr(db_task_result, name)))
        super().run_task(db_task_result)

    def _until_written(self, store):
        """``store`` (the row's set_successful / set_failed), retried while the database is
        locked, so that a finished task's result is kept rather than its row left RUNNING."""

        @functools.wraps(store)
        def keep_trying(*args, **kwargs):
            while True:
                try:
                    return store(*args, **kwargs)
                except OperationalError as error:
                    if not _is_locked(error) or not self.running:
                        raise
                    logger.warning(
                        "The database is locked (%s); the task's result is written when it is "
                        "free.", error,
                    )
                    time.sleep(LOCKED_RETRY_S)

        return keep_trying


def settle_dead_workers(stdout=None) -> None:
    """Fail what workers that died left running; a locked database only postpones it (the
    check reaping does it again on the next check)."""
    try:
        checks = ConnectionCheck.objects.reap_stale()
        tasks = settle_task_rows(force=True)
    except OperationalError as error:
        if not _is_locked(error):
            raise
        logger.warning("The database is locked (%s); stale task rows are settled later.", error)
        _close_connection()
        return
    if (checks or tasks) and stdout is not None:
        stdout.write(f"Failed {checks} interrupted check(s) and {tasks} task row(s) of workers that stopped.")


class Command(db_worker.Command):
    help = (
        "Run the database background worker (django_tasks_db's db_worker), carrying on through a "
        "locked database and settling the task rows of workers that died."
    )

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(worker_id=None)

    def handle(self, *, verbosity, queue_name, interval, batch, backend_name, startup_delay,
               reload, max_tasks, worker_id: str | None, exclude_queues, **options) -> None:
        self.configure_logging(verbosity)
        if reload and batch:
            logger.warning("--reload and --batch cannot be specified together. Disabling autoreload.")
            reload = False
        queue_names = queue_name.split(",")
        excluded = exclude_queues.split(",") if exclude_queues else []
        if excluded and "*" not in queue_names:
            from django.core.management.base import CommandError

            raise CommandError("--exclude-queues can only be used with --queue-name=*")

        # Made in each process (with --reload, the reloader's child is the worker), so that the
        # id names the process that runs the tasks.
        worker = LockTolerantWorker(
            queue_names=queue_names, interval=interval, batch=batch,
            backend_name=backend_name, startup_delay=startup_delay, max_tasks=max_tasks,
            worker_id=worker_id or own_worker_id(), excluded_queue_names=excluded,
        )
        if reload:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                worker.configure_signals()
                settle_dead_workers(self.stdout)
            run_with_reloader(worker.run)
            return
        worker.configure_signals()
        settle_dead_workers(self.stdout)
        worker.run()
