"""Background work: connection checks run by a worker through the Tasks API.

The task body only loads, calls and stores: the parameters come from
``Device.connection_params`` (the one place that computes a password), the network work from
``checks.run_connection_check``. Every entry point (API, console, admin, command) starts a check
with :func:`request_check`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_tasks import task
from django_tasks_db.utils import is_locked_database_exception

from . import hot_queries
from .connection_check import DEFAULT_PROTOCOL, PROTOCOLS, Outcome, run_connection_check
from .models import (
    CheckStatus,
    ConnectionCheck,
    Device,
    DeviceStatus,
    check_max_runtime,
    runner_name,
)
from .options import ConnectionOptions, OptionError

logger = logging.getLogger(__name__)

CHECK_TOPIC = "/{product_id}/{device_id}/user/portal-check"
WAIT_POLL_SECONDS = 0.2
STATUS_SETTLE_SECONDS = 0.5  # how long a broker may take to record a check's own disconnect


class DeviceOnlineError(Exception):
    """The device is connected; a check would replace its session (or be refused)."""

    code = "device_online"

    def __init__(self, device):
        self.device = device
        super().__init__(
            _(
                "Device %(device)s is online. A check connects as the device, so the broker "
                "disconnects the device (or refuses the check if it connected exclusive). "
                "Confirm with force=true to run it anyway."
            )
            % {"device": device.device_id}
        )


def request_check(
    device: Device,
    *,
    options: ConnectionOptions | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    requested_by=None,
    force: bool = False,
) -> ConnectionCheck:
    """Record a queued check and enqueue its task once the row is committed.

    Raises OptionError for options this deployment cannot use (checked now, so that the
    caller can answer 400 instead of queueing a check bound to fail) and DeviceOnlineError when
    the device is online and ``force`` is false.
    """
    options = options or ConnectionOptions()
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise OptionError(
            "protocol", _("protocol must be one of %(names)s.") % {"names": ", ".join(PROTOCOLS)}
        )
    device.connection_params(options)  # validates; the password is computed again at run time
    if device.status == DeviceStatus.ONLINE and not force and not _offline_after_own_check(device):
        raise DeviceOnlineError(device)
    stored = options.as_query()
    stored["protocol"] = protocol
    check = ConnectionCheck.objects.create(
        device=device,
        options=stored,
        requested_by=requested_by if requested_by and requested_by.is_authenticated else None,
    )
    transaction.on_commit(lambda: _enqueue(check.pk))
    return check


def _offline_after_own_check(device: Device) -> bool:
    """Whether "online" was only the connection of the device's last check.

    A check connects as the device, and the broker writes status in batches (the embedded one
    every 0.1 s, EMQX through its webhook), so for a moment after a check has finished the device
    still reads online; a second "Test connection" pressed then must not meet "device online".
    Only after a check that finished just now is the status watched, for at most
    STATUS_SETTLE_SECONDS; a device that stays online is online.
    """
    just_now = timezone.now() - timezone.timedelta(seconds=2)
    if not ConnectionCheck.objects.filter(
        device=device, status=CheckStatus.SUCCEEDED, finished_at__gte=just_now
    ).exists():
        return False
    give_up = time.monotonic() + STATUS_SETTLE_SECONDS
    while time.monotonic() < give_up:
        time.sleep(0.02)
        device.refresh_from_db(fields=["status"])
        if device.status != DeviceStatus.ONLINE:
            return True
    return False


def _enqueue(check_id: int):
    try:
        result = run_check.enqueue(check_id)
    except Exception as error:  # noqa: BLE001 - a queue that is down must not leave it queued
        logger.exception("connection check %s could not be queued", check_id)
        check = ConnectionCheck.objects.filter(pk=check_id).first()
        if check is not None:
            check.finish(Outcome.INTERNAL_ERROR, f"could not be queued: {type(error).__name__}")
        return
    ConnectionCheck.objects.filter(pk=check_id).update(task_id=str(result.id)[:64])


def _claim(check_id: int) -> str:
    """Mark the check running unless another check of its device runs: "claimed", "busy", or
    "gone" (deleted or no longer queued). The device row lock serialises claims per device
    (SQLite serialises all writes anyway)."""
    with transaction.atomic():
        check = ConnectionCheck.objects.filter(pk=check_id).only("device_id", "status").first()
        if check is None or check.status != CheckStatus.QUEUED:
            return "gone"
        list(Device.objects.select_for_update().filter(pk=check.device_id).values("pk"))
        busy = (
            ConnectionCheck.objects.filter(device_id=check.device_id, status=CheckStatus.RUNNING)
            .exclude(pk=check_id)
            .exists()
        )
        if busy:
            return "busy"
        updated = ConnectionCheck.objects.filter(pk=check_id, status=CheckStatus.QUEUED).update(
            status=CheckStatus.RUNNING, started_at=timezone.now(), runner=runner_name()
        )
        return "claimed" if updated else "gone"


def reap_stale_unless_locked() -> bool:
    """``ConnectionCheck.objects.reap_stale()`` as housekeeping: when the database stays locked
    past its timeout (a batch import, an export), it is left for the next call (every task and
    checkconnections' poll reap again) rather than failing its caller; a task that failed here
    would leave its checks queued for ever. Returns whether it ran."""
    try:
        ConnectionCheck.objects.reap_stale()
    except OperationalError as error:
        if not is_locked_database_exception(error):
            raise
        logger.warning("The database is locked (%s); stale checks are reaped later.", error)
        return False
    return True


@task()
def run_check(check_id: int) -> str:
    """Run one queued ConnectionCheck and store its result. Returns the outcome code.

    Two checks of one device never run at once (each would replace the other's session at the
    broker): the second waits here until the first finishes or is found interrupted.
    """
    reap_stale_unless_locked()
    give_up = time.monotonic() + 2 * check_max_runtime()
    while True:
        claim = _claim(check_id)
        if claim == "gone":
            return "skipped"
        if claim == "claimed":
            break
        # "busy": another check of this device runs. reap_stale ends it by check_max_runtime()
        # at the latest, so give_up only guards against a clock jump.
        if time.monotonic() > give_up:
            break
        time.sleep(WAIT_POLL_SECONDS)
        reap_stale_unless_locked()
    check = ConnectionCheck.objects.select_related("device__product").get(pk=check_id)
    if check.status != CheckStatus.RUNNING:  # the give-up path
        ConnectionCheck.objects.filter(pk=check_id).update(
            status=CheckStatus.RUNNING, started_at=timezone.now(), runner=runner_name()
        )
        check.refresh_from_db()
    try:
        result = _run(check)
    except Exception as error:  # noqa: BLE001 - a check must end with a reason, never stuck
        logger.exception("connection check %s failed unexpectedly", check_id)
        check.finish(Outcome.INTERNAL_ERROR, f"{type(error).__name__}: {error}")
        return Outcome.INTERNAL_ERROR
    check.finish(result.outcome, result.detail, result.connack_code, result.latencies)
    return result.outcome


def _run(check: ConnectionCheck):
    from .connection_check import CheckResult

    stored = dict(check.options)
    protocol = stored.pop("protocol", DEFAULT_PROTOCOL)
    device = check.device
    try:
        options = ConnectionOptions.from_query(stored)
        params = device.connection_params(options)
    except OptionError as error:
        return CheckResult(Outcome.INVALID_OPTIONS, detail=f"{error.field}: {error.message}")
    return run_connection_check(
        params["host"],
        params["port"],
        params["mqttClientId"],
        params["mqttUsername"],
        params["mqttPassword"],
        tls=params["securemode"] == 2,
        # No CA file of the deployment's (a broker with a public certificate): the system's.
        ca_file=settings.MQTT_CA_FILE
        if params["securemode"] == 2 and Path(settings.MQTT_CA_FILE).is_file()
        else None,
        protocol=protocol,
        topic=CHECK_TOPIC.format(product_id=device.product.product_id, device_id=device.device_id),
        timeout=settings.CHECK_STEP_TIMEOUT,
    )


# --- Fleet checks (checkconnections): many checks per task, run concurrently -------------------
# A fleet task runs FLEET_CONCURRENCY checks at a time in threads (network only: the database is
# touched by the task's own thread alone), claims checks in bulk and writes results in bulk, in
# one write transaction per round. The threads never wait for that transaction: FLEET_LOOKAHEAD
# checks (doubled, up to FLEET_LOOKAHEAD_MAX, each time the threads ran out of them during a round
# slower than FLEET_SLOW_ROUND_S) are claimed ahead and wait in the pool's queue, so a thread that
# finishes a check starts the next at once while the task's thread queues for the database's
# write lock (on SQLite shared with the broker's status batches and the connection log). A
# claimed check still waiting for a thread after FLEET_CLAIM_RENEW_S has its started_at renewed,
# so that each check keeps its own check_max_runtime() from about when it really starts. The
# task stops claiming in time to end within task_max_runtime(), gives back (queued again) the
# claimed checks no thread has taken yet, and queues what is left as a new task, however slow the
# checks are.
FLEET_CONCURRENCY = 32
FLEET_LOOKAHEAD = 64  # to start with; doubled (up to FLEET_LOOKAHEAD_MAX) when it ran out
FLEET_LOOKAHEAD_MAX = 512
FLEET_SLOW_ROUND_S = 0.05
FLEET_CHUNK = 1000
FLEET_FLUSH_EVERY_S = 0.25  # results are written at least this often (progress for a watcher)
FLEET_CLAIM_RENEW_S = 5.0
# A check claimed ahead that waited longer than this for a thread reloads its device first: the
# registry's changes reach a CONNECT within 1 s (verifier's cache), and so they reach a check.
FLEET_REFRESH_AFTER_S = 1.0
_DEVICE_STATE_FIELDS = ["device_secret", "previous_secret", "enabled", "secret_rotated_at"]
_RESULT_FIELDS = ["status", "outcome", "reason", "connack_code", "latencies", "finished_at"]


def request_fleet_checks(devices, *, options: ConnectionOptions | None = None,
                         requested_by=None, force: bool = False) -> list[ConnectionCheck]:
    """Queue one check per device (rows in bulk), run by ``run_fleet_checks`` tasks of
    FLEET_CHUNK checks each. Same rules as :func:`request_check`: options are validated for every
    device (OptionError), an online device needs ``force`` (DeviceOnlineError)."""
    options = options or ConnectionOptions()
    stored = options.as_query()
    stored["protocol"] = DEFAULT_PROTOCOL
    requester = requested_by if requested_by and requested_by.is_authenticated else None
    devices = list(devices)
    for device in devices:
        device.connection_params(options)  # validates; the password is computed again at run time
        if device.status == DeviceStatus.ONLINE and not force:
            raise DeviceOnlineError(device)
    # One row per device, all queued at the same moment (bulk_create's compile step was 14 s of
    # a fleet of 100,000 before its first check could start).
    template = ConnectionCheck(options=stored, requested_by=requester)
    pks = hot_queries.insert_copies(template, "device_id", [device.pk for device in devices])
    checks = []
    for pk, device in zip(pks, devices, strict=True):
        check = ConnectionCheck(pk=pk, device=device, options=dict(stored),
                                requested_by=requester, queued_at=template.queued_at)
        check._state.adding, check._state.db = False, connection.alias
        checks.append(check)
    for start in range(0, len(checks), FLEET_CHUNK):
        ids = [check.pk for check in checks[start:start + FLEET_CHUNK]]
        transaction.on_commit(lambda ids=ids: _enqueue_fleet(ids))
    return checks


def _enqueue_fleet(check_ids: list[int]):
    if not check_ids:  # (the threads took the last claimed checks meanwhile): no empty task
        return
    try:
        result = run_fleet_checks.enqueue(check_ids)
    except Exception as error:  # noqa: BLE001 - a queue that is down must not leave them queued
        logger.exception("fleet checks %s… could not be queued", check_ids[:1])
        _store([(check, _internal_error(f"could not be queued: {type(error).__name__}"))
                for check in ConnectionCheck.objects.filter(pk__in=check_ids)])
        return
    ConnectionCheck.objects.filter(pk__in=check_ids).update(task_id=str(result.id)[:64])


def _internal_error(detail):
    from .connection_check import CheckResult

    return CheckResult(Outcome.INTERNAL_ERROR, detail=detail)


def _load_queued(check_ids) -> list[ConnectionCheck]:
    """Those of ``check_ids`` still queued, their device and product loaded, first queued first.
    Read outside the claim's write transaction, which only confirms they are still queued."""
    if not check_ids:
        return []
    return list(
        ConnectionCheck.objects.filter(pk__in=check_ids, status=CheckStatus.QUEUED)
        .select_related("device__product").order_by("pk")
    )


def _claim_loaded(checks, deferred: list) -> list[ConnectionCheck]:
    """Mark running, in one transaction, those of ``checks`` (from :func:`_load_queued`) still
    queued whose device runs no other check (as :func:`_claim`, for many); the others of a busy
    device go to ``deferred``. Returns the claimed checks."""
    if not checks:
        return []
    with transaction.atomic():
        still_queued = set(
            ConnectionCheck.objects.filter(
                pk__in=[check.pk for check in checks], status=CheckStatus.QUEUED
            ).order_by().values_list("pk", flat=True)
        )
        checks = [check for check in checks if check.pk in still_queued]
        device_ids = {check.device_id for check in checks}
        if not device_ids:
            return []
        if connection.features.has_select_for_update:  # SQLite serialises all writes anyway
            list(Device.objects.select_for_update().filter(pk__in=device_ids).values("pk"))
        busy = set(
            ConnectionCheck.objects.filter(device_id__in=device_ids, status=CheckStatus.RUNNING)
            .order_by().values_list("device_id", flat=True)
        )
        claimed = []
        for check in checks:
            if check.device_id in busy:
                deferred.append(check.pk)
                continue
            busy.add(check.device_id)  # two checks of one device in one batch: the second waits
            claimed.append(check)
        now, runner = timezone.now(), runner_name()
        if claimed:
            ConnectionCheck.objects.filter(
                pk__in=[check.pk for check in claimed], status=CheckStatus.QUEUED
            ).update(status=CheckStatus.RUNNING, started_at=now, runner=runner)
    for check in claimed:
        check.status, check.started_at, check.runner = CheckStatus.RUNNING, now, runner
    return claimed


def _unclaim(check_ids):
    """This task's claimed checks that no thread started: queued again (for another task)."""
    if check_ids:
        ConnectionCheck.objects.filter(
            pk__in=check_ids, status=CheckStatus.RUNNING, runner=runner_name()
        ).update(status=CheckStatus.QUEUED, started_at=None, runner="")


def _run_safely(check):
    try:
        return _run(check)
    except Exception as error:  # noqa: BLE001 - a check must end with a reason, never stuck
        logger.exception("connection check %s failed unexpectedly", check.pk)
        return _internal_error(f"{type(error).__name__}: {error}")


def _store(results):
    """The results of many checks, written as ``ConnectionCheck.finish`` writes them (the same
    fields, each value prepared by its field as ``save`` does), in one statement executed once
    per row (``executemany``): building Django's ``bulk_update`` (a CASE per field and row) cost
    more than the write itself, inside the write transaction."""
    if not results:
        return
    now = timezone.now()
    checks = []
    for check, result in results:
        check.status = (
            CheckStatus.SUCCEEDED if result.outcome == Outcome.ACCEPTED else CheckStatus.FAILED
        )
        check.outcome = result.outcome
        check.reason = result.detail
        check.connack_code = result.connack_code
        check.latencies = result.latencies or {}
        check.finished_at = now
        checks.append(check)
    meta = ConnectionCheck._meta
    fields = [meta.get_field(name) for name in _RESULT_FIELDS]
    quote = connection.ops.quote_name
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        quote(meta.db_table),
        ", ".join(f"{quote(field.column)} = %s" for field in fields),
        quote(meta.pk.column),
    )
    rows = [
        [field.get_db_prep_save(getattr(check, field.attname), connection) for field in fields]
        + [check.pk]
        for check in checks
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


class _FleetPool:
    """FLEET_CONCURRENCY threads running claimed checks, and what the task's thread needs to know
    of them: how many are claimed and not finished, which have not started (to renew their
    claim), and the results that came in."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(FLEET_CONCURRENCY, thread_name_prefix="fleet-check")
        self.finished = queue.SimpleQueue()
        self.in_flight = 0
        self._not_started = {}  # check pk -> (check, time.monotonic() when claimed or renewed)
        self._lock = threading.Lock()

    def submit(self, check):
        claimed = time.monotonic()
        with self._lock:
            self._not_started[check.pk] = (check, claimed)
        self.in_flight += 1
        self.executor.submit(self._run, check, claimed)

    def _run(self, check, claimed):
        with self._lock:
            if self._not_started.pop(check.pk, None) is None:
                self.finished.put((check, None))  # withdrawn before a thread took it
                return
        result = _internal_error("the check ended without a result")
        try:
            if time.monotonic() - claimed > FLEET_REFRESH_AFTER_S:
                # Claimed ahead and waited for a thread: sign with the device as it is now (a
                # secret rotated or a device disabled meanwhile), as a check started now would.
                try:
                    check.device.refresh_from_db(fields=_DEVICE_STATE_FIELDS)
                except Device.DoesNotExist:  # deleted meanwhile: its check went with it
                    result = None
                    return
            result = _run_safely(check)
        finally:  # whatever happens, the task's thread hears of it (or it would wait for ever)
            self.finished.put((check, result))

    def withdraw(self) -> list:
        """The claimed checks no thread has taken yet, which no thread will take now."""
        with self._lock:
            checks = [check for check, _since in self._not_started.values()]
            self._not_started.clear()
        return checks

    def not_started(self) -> int:
        with self._lock:
            return len(self._not_started)

    def waiting_since(self, seconds) -> list:
        """The claimed checks still waiting for a thread since at least ``seconds`` ago."""
        limit = time.monotonic() - seconds
        with self._lock:
            return [check for check, since in self._not_started.values() if since <= limit]

    def renewed(self, checks):
        now = time.monotonic()
        with self._lock:
            for check in checks:
                if check.pk in self._not_started:
                    self._not_started[check.pk] = (check, now)

    def next_renewal(self) -> float:
        with self._lock:
            oldest = min((since for _, since in self._not_started.values()), default=None)
        return float("inf") if oldest is None else oldest + FLEET_CLAIM_RENEW_S

    def gather(self, want: int) -> list:
        """Finished checks and their results: wait until ``want`` of them are in, none is
        running, FLEET_FLUSH_EVERY_S has passed (the task's thread looks at its budget that often,
        and writes progress that often) or a claim's renewal is due; then take those that
        finished meanwhile."""
        results = []
        wake_by = time.monotonic() + FLEET_FLUSH_EVERY_S  # at the latest (the task's budget)
        while self.in_flight and len(results) < want:
            now = time.monotonic()
            until = min(wake_by, self.next_renewal())
            if now >= until:
                break
            try:
                results.append(self.finished.get(timeout=until - now))
            except queue.Empty:
                continue
            self.in_flight -= 1
        while True:
            try:
                results.append(self.finished.get_nowait())
            except queue.Empty:
                return [(check, result) for check, result in results if result is not None]
            self.in_flight -= 1


@task()
def run_fleet_checks(check_ids: list[int]) -> dict:
    """Run these queued checks, FLEET_CONCURRENCY at a time; returns the count per outcome.

    A check whose device already runs another check is handed to :func:`run_check` (one task
    for it, which waits its turn), so the one-check-per-device rule holds as for any check."""
    from collections import Counter

    from .task_results import task_max_runtime

    reap_stale_unless_locked()
    pending, deferred, results, counts = list(check_ids), [], [], Counter()
    stop_claiming = time.monotonic() + task_max_runtime() - 2 * check_max_runtime()
    lookahead = FLEET_LOOKAHEAD
    pool = _FleetPool()
    try:
        while True:
            if time.monotonic() > stop_claiming and (pending or pool.not_started()):
                withdrawn = [check.pk for check in pool.withdraw()]
                _unclaim(withdrawn)  # claimed ahead, never started: queued again, for the next task
                _enqueue_fleet(sorted(withdrawn + pending))  # the rest as a task of its own
                pending = []
            room = FLEET_CONCURRENCY + lookahead - pool.in_flight
            batch, pending = pending[:room], pending[room:]
            loaded = _load_queued(batch)  # read before the write transaction: it holds the lock
            renew = pool.waiting_since(FLEET_CLAIM_RENEW_S)
            if results or loaded or renew:
                # One write transaction per round: the results that came in, the claims for the
                # free slots and the renewals (on SQLite every write transaction queues for the
                # one write lock).
                had_waiting, began = pool.not_started(), time.monotonic()
                with transaction.atomic():
                    _store(results)
                    claimed = _claim_loaded(loaded, deferred)
                    if renew:
                        ConnectionCheck.objects.filter(
                            pk__in=[check.pk for check in renew], status=CheckStatus.RUNNING,
                            runner=runner_name(),
                        ).update(started_at=timezone.now())
                pool.renewed(renew)
                slow = time.monotonic() - began > FLEET_SLOW_ROUND_S
                if pending and had_waiting and slow and not pool.not_started():
                    # The threads ran out of claimed checks while this round waited for the
                    # database: claim further ahead.
                    lookahead = min(2 * lookahead, FLEET_LOOKAHEAD_MAX)
                counts.update(result.outcome for _check, result in results)
                results = []
                for check in claimed:
                    pool.submit(check)
            refill = max(1, lookahead // 2)  # claim again once the threads took this many
            room = FLEET_CONCURRENCY + lookahead - pool.in_flight
            if pending and room >= refill:
                continue  # checks of the batch were gone or deferred: claim more now
            if not pool.in_flight:
                break
            results = pool.gather(refill - room if pending else len(check_ids) + 1)
    finally:
        # On an error, the checks claimed ahead that no thread took are not run for nothing:
        # they go back to the queue (a later task takes them), and only the running ones end.
        unstarted = [check.pk for check in pool.withdraw()]
        if unstarted:
            try:
                _unclaim(unstarted)
                _enqueue_fleet(unstarted)
            except Exception:  # noqa: BLE001 - the database is down: the reaper settles them
                logger.exception("fleet checks %s… could not be given back", unstarted[:1])
        pool.executor.shutdown(wait=True)
    for check_id in deferred:
        _enqueue(check_id)
    return dict(counts)
