"""The connection log's recorder: what a broker saw, kept off its hot path.

A broker (the embedded one, or the EMQX hooks) calls :func:`record` for every CONNECT outcome
and every end of a session. ``record`` only appends one tuple of its arguments to an in-process
queue and returns (the embedded broker calls it on its event loop, a thousand times a second);
a daemon thread takes the queue every ``FLUSH_INTERVAL_S`` and does all the rest per batch
(:func:`flush`): it folds identical events, looks up their devices, the rows they fold into
(one query for the whole batch), inserts the new rows in bulk and trims the devices that went
over their limit, in one transaction. At that point, and only then, a refusal of a known
device is diagnosed with the signature debugger's own reasoning
(:func:`devices.diagnosis.diagnose`) and its findings are stored in English and Chinese; the
password the device sent lives in the queue until then and is never stored or logged.

Folding: events with the same device (or product, when the deviceId is unknown), kind, code,
clientId and peer host (the port left out) within ``FOLD_WINDOW_S`` of the row's first event are
one row whose ``count`` grows, both inside a batch and against the newest matching row in the
database. At most ``MAX_EVENTS_PER_DEVICE`` rows are kept per device (and per product for unknown
devices, and for the staff-only list), checked after every batch; ``manage.py prunechecks``
deletes rows older than ``PORTAL_CONNECTION_LOG_DAYS``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from . import signing
from .background import start_flush_thread
from .choices import ConnectionKind

logger = logging.getLogger("devices.connection_log")

FLUSH_INTERVAL_S = 0.25
FOLD_WINDOW_S = 60
MAX_EVENTS_PER_DEVICE = 500
MAX_BUFFERED = 10_000  # distinct events of one batch; beyond it new ones are dropped and counted
MAX_QUEUED = 100_000  # events waiting for the flush thread (a database locked for long)
# CPU the diagnoses of one flush may take (a diagnosis is ~30 ms of HMACs, on the broker's GIL):
# past it, further new rows of that flush keep the code's words only. One is always done.
DIAGNOSIS_BUDGET_S = 0.03
_TEXT_MAX = 200
_CHUNK = 500  # ids per IN (...) (SQLite's variable limit is far above; keeps statements small)


def _cut(value, limit=_TEXT_MAX) -> str:
    return value[:limit] if isinstance(value, str) else ""


def peer_host(peer: str) -> str:
    """``host`` of ``host:port`` (IPv6 ``[::1]:1883`` too); the whole value when no port."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    host, sep, port = peer.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host
    return peer


@dataclass
class PendingEvent:
    kind: str
    broker: str
    code: str
    at: datetime
    product_id: str | None
    device_id: str | None
    peer: str = ""
    transport: str = ""
    protocol: str = ""
    client_id: str = ""
    connack: int | None = None
    session_seconds: int | None = None
    taker_peer: str = ""
    taker_client_id: str = ""
    count: int = 1
    first_at: datetime | None = None
    # For the diagnosis at flush time only; never stored, never in a repr.
    mqtt_client_id: str = field(default="", repr=False)
    username: str = field(default="", repr=False)
    password: str | None = field(default=None, repr=False)

    def fold_key(self):
        return (self.product_id, self.device_id, self.kind, self.code, self.client_id,
                peer_host(self.peer))


class _Buffer:
    def __init__(self):
        self.lock = threading.Lock()
        # record() appends, flush() pops: deque's append and popleft are safe between threads
        # without a lock, so that the broker's event loop never waits for the flush thread.
        self.queue: deque[tuple] = deque()
        self.dropped = 0
        self.thread: threading.Thread | None = None
        self.flush_lock = threading.Lock()


_buffer = _Buffer()


def _after_fork_in_child():
    """A forked worker (gunicorn --preload) has no flush thread of its own: start afresh."""
    global _buffer
    _buffer = _Buffer()


os.register_at_fork(after_in_child=_after_fork_in_child)


def enabled() -> bool:
    return getattr(settings, "CONNECTION_LOG", True)


def record(kind: str, *, broker: str, code: str, peer: str = "", transport: str | None = "",
           protocol: str = "", mqtt_client_id: str = "", username: str = "",
           password: str | None = None, connack: int | None = None,
           session_seconds: float | None = None, taker_peer: str = "", taker_client_id: str = "",
           product_id: str | None = None, device_id: str | None = None,
           at: datetime | None = None) -> None:
    """Note one event; returns at once (no database work, no parsing here: the flush thread
    does it). The device is found from ``product_id``/``device_id`` or else from ``username``
    (deviceId&productId), when it parses."""
    if not enabled():
        return
    buffer = _buffer
    if len(buffer.queue) < MAX_QUEUED:
        buffer.queue.append((
            kind, broker, code, peer, transport, protocol, mqtt_client_id, username, password,
            connack, session_seconds, taker_peer, taker_client_id, product_id, device_id,
            time.time() if at is None else at,
        ))
    else:
        with buffer.lock:
            buffer.dropped += 1
    if buffer.thread is None and getattr(settings, "CONNECTION_LOG_BACKGROUND", True):
        start()


def _pending_event(kind, broker, code, peer, transport, protocol, mqtt_client_id, username,
                   password, connack, session_seconds, taker_peer, taker_client_id, product_id,
                   device_id, at) -> PendingEvent:
    """What :func:`record` queued, checked and cut to the columns' sizes."""
    if product_id is None:
        try:
            device_id, product_id = signing.parse_username(username)
        except (signing.SigningError, TypeError):
            product_id = device_id = None
    mqtt_client_id = mqtt_client_id if isinstance(mqtt_client_id, str) else ""
    if not isinstance(at, datetime):
        at = datetime.fromtimestamp(at, tz=UTC) if settings.USE_TZ else datetime.fromtimestamp(at)
    return PendingEvent(
        kind=kind, broker=broker, code=_cut(code, 40), at=at, first_at=at,
        product_id=product_id, device_id=device_id, peer=_cut(peer, 100),
        transport=_cut(transport or "", 8), protocol=_cut(protocol, 16),
        client_id=_cut(mqtt_client_id.partition("|")[0]), connack=connack,
        session_seconds=None if session_seconds is None else max(0, int(session_seconds)),
        taker_peer=_cut(taker_peer, 100), taker_client_id=_cut(taker_client_id),
        mqtt_client_id=mqtt_client_id[:1024], username=_cut(username or "", 300),
        password=password if isinstance(password, str) and kind == ConnectionKind.REFUSED else None,
    )


def _take_queue() -> tuple[list[PendingEvent], int]:
    """The queued events folded (same key within FOLD_WINDOW_S of the first: one event whose
    count grows), in order, and how many were dropped for want of room."""
    queue = _buffer.queue
    pending: dict[tuple, PendingEvent] = {}
    dropped = 0
    while True:
        try:
            queued = queue.popleft()
        except IndexError:
            break
        event = _pending_event(*queued)
        key = event.fold_key()
        folded = pending.get(key)
        if folded is not None and (event.at - folded.first_at).total_seconds() < FOLD_WINDOW_S:
            folded.count += 1
            folded.at = max(folded.at, event.at)  # EMQX's events carry their own times
        elif folded is None and len(pending) >= MAX_BUFFERED:
            dropped += 1
        else:
            if folded is not None:  # a minute old: write it as it is, start a new one
                pending[(*key, id(folded))] = folded
                del pending[key]
            pending[key] = event
    return list(pending.values()), dropped


def start() -> None:
    """Start the flush thread (once per process); the embedded broker calls it at start."""
    start_flush_thread(_buffer, name="connection-log", interval_s=FLUSH_INTERVAL_S, flush=flush,
                       logger=logger, what="the connection log")


def dropped() -> int:
    """How many events were dropped because the buffer was full (since the last flush)."""
    return _buffer.dropped


def flush() -> int:
    """Write what is queued, in one transaction; returns how many events were written
    (folded ones counted once each). Tests and shutdown call it; the thread does otherwise."""
    with _buffer.flush_lock:
        pending, dropped_now = _take_queue()
        with _buffer.lock:
            dropped_now, _buffer.dropped = dropped_now + _buffer.dropped, 0
        if dropped_now:
            logger.warning("Connection log: %d event(s) dropped, the buffer was full", dropped_now)
        if not pending:
            return 0
        try:
            _write(pending)
        finally:
            for event in pending:
                event.password = None
        return sum(event.count for event in pending)


@dataclass
class _Target:
    """The row a key's next event folds into: one in the database (``pk``) or one this batch
    inserts (``row``)."""

    first_at: datetime
    pk: int | None = None
    row: object = None


def _row_key(product_pk, device_pk, kind, code, client_id, host):
    return (product_pk, device_pk, kind, code, client_id, host)


def _event_key(event, product_pk, device_pk):
    return _row_key(product_pk, device_pk, event.kind, event.code, event.client_id,
                    peer_host(event.peer))


def _fold_targets(resolved) -> dict[tuple, _Target]:
    """For every key of the batch, the newest row (by first_at, then id) that could take its
    events: one query per kind of owner (device, product, none) and chunk, not one per event."""
    from django.db.models import Q

    from .models import ConnectionEvent

    window_start = min(event.at for event, _p, _d in resolved) - timedelta(seconds=FOLD_WINDOW_S)
    keys = {_event_key(event, product_pk, device_pk) for event, product_pk, device_pk in resolved}
    device_pks = sorted({key[1] for key in keys if key[1] is not None})
    product_pks = sorted({key[0] for key in keys if key[1] is None and key[0] is not None})
    owners = [Q(device_id__in=device_pks[i : i + _CHUNK]) for i in range(0, len(device_pks), _CHUNK)]
    owners += [Q(device=None, product_id__in=product_pks[i : i + _CHUNK])
               for i in range(0, len(product_pks), _CHUNK)]
    if any(key[0] is None and key[1] is None for key in keys):
        owners.append(Q(device=None, product=None))
    newest: dict[tuple, tuple] = {}  # key → (first_at, pk) of its newest row
    for owner in owners:
        rows = ConnectionEvent.objects.filter(
            owner, first_at__gt=window_start, kind__in={k[2] for k in keys},
            code__in={k[3] for k in keys},
        ).order_by().values_list("product_id", "device_id", "kind", "code", "client_id",
                                 "peer_host", "first_at", "pk")
        for *fields, first_at, pk in rows:
            key = _row_key(*fields)
            if key in keys and (key not in newest or (first_at, pk) > newest[key]):
                newest[key] = (first_at, pk)
    return {key: _Target(first_at=first_at, pk=pk) for key, (first_at, pk) in newest.items()}


def _folds(target: _Target | None, event: PendingEvent) -> bool:
    return target is not None and target.first_at > event.at - timedelta(seconds=FOLD_WINDOW_S)


def _write(pending: list[PendingEvent]) -> None:
    from django.db import transaction

    from .models import ConnectionEvent, Device, Product

    # Only the primary keys: the rows are written with them, and the few devices a diagnosis
    # needs whole are loaded by ``diagnosed``.
    product_ids = {e.product_id for e in pending if e.product_id}
    products = dict(Product.objects.filter(product_id__in=product_ids)
                    .values_list("product_id", "pk"))
    device_ids = {e.device_id for e in pending if e.product_id in products}
    devices = {
        (product_id, device_id): pk
        for product_id, device_id, pk in Device.objects.filter(
            product__in=products.values(), device_id__in=device_ids
        ).values_list("product__product_id", "device_id", "pk")
    } if device_ids else {}
    resolved = []
    for event in pending:
        product_pk = products.get(event.product_id)
        resolved.append((event, product_pk, devices.get((event.product_id, event.device_id))
                         if product_pk is not None else None))
    budget = {"left": DIAGNOSIS_BUDGET_S}
    whole = {}

    def diagnosed(event, device_pk):
        if (device_pk is not None and _needs_diagnosis(event) and budget["left"] > 0
                and device_pk not in whole):
            whole[device_pk] = Device.objects.select_related("product").filter(pk=device_pk).first()
        return _findings(event, whole.get(device_pk), budget)

    # The findings (the diagnosis: CPU work, both languages) are made before the transaction,
    # for the events that will not fold into an earlier row, so that the write lock (SQLite has
    # one for all processes) is held only for the writes. A fold that appears meanwhile wins.
    # Only refusals are diagnosed (an accepted CONNECT's clock warnings and an end of session
    # cost next to nothing), so only they are looked up here.
    findings = {}
    targets = None
    if any(_needs_diagnosis(event) for event in pending):
        targets = _fold_targets(resolved)
        for index, (event, product_pk, device_pk) in enumerate(resolved):
            if _needs_diagnosis(event) and not _folds(
                targets.get(_event_key(event, product_pk, device_pk)), event
            ):
                findings[index] = diagnosed(event, device_pk)
    with transaction.atomic():
        targets = _fold_targets(resolved) if targets is None or findings else targets
        increments: dict[int, list] = {}  # row pk → [count to add, newest last_at]
        new_rows = []
        touched = set()
        for index, (event, product_pk, device_pk) in enumerate(resolved):
            key = _event_key(event, product_pk, device_pk)
            target = targets.get(key)
            if _folds(target, event):
                if target.row is not None:
                    target.row.count += event.count
                    target.row.last_at = max(target.row.last_at, event.at)
                else:
                    added = increments.setdefault(target.pk, [0, event.at])
                    added[0] += event.count
                    added[1] = max(added[1], event.at)
                continue
            row = ConnectionEvent(
                product_id=product_pk, device_id=device_pk, first_at=event.first_at,
                last_at=event.at,
                kind=event.kind, broker=event.broker, peer=event.peer,
                peer_host=peer_host(event.peer), transport=event.transport,
                protocol=event.protocol, client_id=event.client_id,
                named_device_id=_cut(event.device_id or "", 64), connack=event.connack,
                code=event.code, count=event.count,
                findings=findings[index] if index in findings else diagnosed(event, device_pk),
                session_seconds=event.session_seconds, taker_peer=event.taker_peer,
                taker_client_id=event.taker_client_id,
            )
            new_rows.append(row)
            if target is None or event.first_at >= target.first_at:
                targets[key] = _Target(first_at=event.first_at, row=row)
            touched.add((product_pk, device_pk))
            event.password = None
        _add_to_rows(increments)
        _insert_rows(new_rows)
        _trim_touched(touched)


def _insert_rows(rows) -> None:
    """INSERT the new rows, one statement sent for all of them (executemany). Stands for
    ``bulk_create(rows)``, whose compile step cost 0.3 ms a row (a reconnect storm's batch holds
    thousands); every value goes through its field's own ``get_db_prep_save``, as there."""
    if not rows:
        return
    from django.db import connection, models

    from .models import ConnectionEvent

    fields = [f for f in ConnectionEvent._meta.concrete_fields if not f.primary_key]
    # Text and numbers are stored as they are (the values were made here, of the right type);
    # datetimes, JSON and the keys go through their field's preparation.
    plain = [isinstance(f, models.CharField | models.IntegerField) for f in fields]
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(ConnectionEvent._meta.db_table)} "
           f"({', '.join(quote(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    prepared = []
    for row in rows:
        values = []
        for f, as_is in zip(fields, plain, strict=True):
            value = getattr(row, f.attname)
            values.append(value if as_is else f.get_db_prep_save(value, connection))
        prepared.append(values)
    with connection.cursor() as cursor:
        cursor.executemany(sql, prepared)


def _add_to_rows(increments: dict[int, list]) -> None:
    """count += n and last_at = the later of the two, for every folded row, in one statement
    per row sent at once (executemany): the increment is the database's, so that two processes
    folding into the same row (gunicorn workers behind the EMQX hooks) both count."""
    if not increments:
        return
    from django.db import connection

    from .models import ConnectionEvent

    quote = connection.ops.quote_name
    meta = ConnectionEvent._meta
    table, count, last_at, pk = (quote(meta.db_table), quote(meta.get_field("count").column),
                                 quote(meta.get_field("last_at").column), quote(meta.pk.column))
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {count} = {count} + %s, "
            f"{last_at} = CASE WHEN {last_at} < %s THEN %s ELSE {last_at} END WHERE {pk} = %s",
            [(n, adapt(at), adapt(at), row) for row, (n, at) in increments.items()],
        )


def _trim_touched(touched) -> None:
    """Trim (``_trim``) the owners that got new rows and now hold more than the limit: one
    counting query per chunk of devices finds them."""
    from django.db.models import Count

    from .models import ConnectionEvent

    device_pks = sorted(device_pk for _product_pk, device_pk in touched if device_pk is not None)
    for start in range(0, len(device_pks), _CHUNK):
        over = (
            ConnectionEvent.objects.filter(device_id__in=device_pks[start : start + _CHUNK])
            .order_by().values("device_id").annotate(rows=Count("id"))
            .filter(rows__gt=MAX_EVENTS_PER_DEVICE).values_list("device_id", flat=True)
        )
        for device_pk in list(over):
            _trim(None, device_pk)
    for product_pk, device_pk in touched:
        if device_pk is None:
            _trim(product_pk, None)


def _trim(product_pk, device_pk):
    """Keep the newest MAX_EVENTS_PER_DEVICE rows of a device (or product, or the staff list)."""
    from django.db.models import Q

    from .models import ConnectionEvent

    rows = ConnectionEvent.objects.filter(device_id=device_pk)
    if device_pk is None:
        rows = rows.filter(product_id=product_pk)
    boundary = rows.order_by("-last_at", "-id").values_list("last_at", "id")[
        MAX_EVENTS_PER_DEVICE - 1 : MAX_EVENTS_PER_DEVICE
    ]
    boundary = list(boundary)
    if not boundary:
        return
    last_at, pk = boundary[0]
    rows.filter(Q(last_at__lt=last_at) | Q(last_at=last_at, id__lt=pk)).delete()


def _needs_diagnosis(event: PendingEvent) -> bool:
    return event.kind == ConnectionKind.REFUSED and event.password is not None


def _findings(event: PendingEvent, device, budget: dict) -> list[dict]:
    """The diagnosis's findings in English and Chinese (the reader's language is chosen when
    the log is read). A refusal of a known device is diagnosed on its real fields, while the
    flush's ``budget`` lasts; an accepted CONNECT only gets the clock's warnings."""
    import time

    from . import diagnosis

    now_ms = int(event.at.timestamp() * 1000)
    if event.kind == ConnectionKind.DISCONNECTED:
        return []  # an end of session has its code's words and nothing to diagnose
    diagnose = _needs_diagnosis(event) and device is not None and budget["left"] > 0
    if not diagnose and not _findings_in("en", event, device, False, now_ms):
        return []  # no clock warning: the words in the other language are not needed either
    started = time.process_time()
    rendered = {}
    with diagnosis.shared_work():
        for language in ("en", "zh"):
            rendered[language] = _findings_in(language, event, device, diagnose, now_ms)
    if diagnose:
        budget["left"] -= time.process_time() - started
    return [
        {"level": en.level, "code": en.code, "en": en.message, "zh": zh.message}
        for en, zh in zip(rendered["en"], rendered["zh"], strict=False)
    ]


def _findings_in(language, event, device, diagnose, now_ms):
    from django.utils import translation

    from . import diagnosis

    with translation.override("zh-hans" if language == "zh" else "en"):
        if diagnose:
            found = diagnosis.diagnose(
                device, event.mqtt_client_id, event.username, event.password,
                transport=event.transport or None, now_ms=now_ms,
            ).findings
            return [f for f in found if f.code != "username_assumed"]
        if event.kind == ConnectionKind.CONNECTED:
            try:
                timestamp = signing.parse_extension(
                    signing.split_mqtt_client_id(event.mqtt_client_id)[1]
                ).get("timestamp")
            except signing.SigningError:
                timestamp = None
            return diagnosis.clock_findings(timestamp, now_ms)
        return []


def prune(days: int | None = None, now: datetime | None = None) -> int:
    """Delete events whose last occurrence is older than ``days`` (PORTAL_CONNECTION_LOG_DAYS)."""
    from .models import ConnectionEvent

    days = settings.CONNECTION_LOG_DAYS if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = ConnectionEvent.objects.filter(last_at__lt=cutoff).delete()
    return deleted
