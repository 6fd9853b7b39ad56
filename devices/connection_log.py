"""The connection log's recorder: what a broker saw, kept off its hot path.

A broker (the embedded one, or the EMQX hooks) calls :func:`record` for every CONNECT outcome
and every end of a session. ``record`` only appends to an in-process buffer (folding identical
events into one as it goes) and returns; a daemon thread writes the buffer every
``FLUSH_INTERVAL_S`` in one transaction (:func:`flush`). At that point, and only then, a refusal
of a known device is diagnosed with the signature debugger's own reasoning
(:func:`devices.diagnosis.diagnose`) and its findings are stored in English and Chinese; the
password the device sent lives in the buffer until then and is never stored or logged.

Folding: events with the same device (or product, when the deviceId is unknown), kind, code,
clientId and peer host (the port left out) within ``FOLD_WINDOW_S`` of the row's first event are
one row whose ``count`` grows, both inside the buffer and against the newest matching row in the
database. At most ``MAX_EVENTS_PER_DEVICE`` rows are kept per device (and per product for unknown
devices, and for the staff-only list); ``manage.py prunechecks`` deletes rows older than
``PORTAL_CONNECTION_LOG_DAYS``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from . import signing
from .background import start_flush_thread
from .choices import ConnectionKind

logger = logging.getLogger("devices.connection_log")

FLUSH_INTERVAL_S = 0.25
FOLD_WINDOW_S = 60
MAX_EVENTS_PER_DEVICE = 500
MAX_BUFFERED = 10_000  # distinct pending events; beyond it new ones are dropped and counted
# CPU the diagnoses of one flush may take (a diagnosis is ~30 ms of HMACs, on the broker's GIL):
# past it, further new rows of that flush keep the code's words only. One is always done.
DIAGNOSIS_BUDGET_S = 0.03
_TEXT_MAX = 200


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
        self.pending: dict[tuple, PendingEvent] = {}
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
    """Note one event; returns at once (no database work here). The device is found from
    ``product_id``/``device_id`` or else from ``username`` (deviceId&productId), when it parses."""
    if not enabled():
        return
    if product_id is None:
        try:
            device_id, product_id = signing.parse_username(username)
        except (signing.SigningError, TypeError):
            product_id = device_id = None
    mqtt_client_id = mqtt_client_id if isinstance(mqtt_client_id, str) else ""
    now = at or timezone.now()
    event = PendingEvent(
        kind=kind, broker=broker, code=_cut(code, 40), at=now, first_at=now,
        product_id=product_id, device_id=device_id, peer=_cut(peer, 100),
        transport=_cut(transport or "", 8), protocol=_cut(protocol, 16),
        client_id=_cut(mqtt_client_id.partition("|")[0]), connack=connack,
        session_seconds=None if session_seconds is None else max(0, int(session_seconds)),
        taker_peer=_cut(taker_peer, 100), taker_client_id=_cut(taker_client_id),
        mqtt_client_id=mqtt_client_id[:1024], username=_cut(username or "", 300),
        password=password if isinstance(password, str) and kind == ConnectionKind.REFUSED else None,
    )
    key = event.fold_key()
    with _buffer.lock:
        folded = _buffer.pending.get(key)
        if folded is not None and (now - folded.first_at).total_seconds() < FOLD_WINDOW_S:
            folded.count += 1
            folded.at = now
        elif folded is None and len(_buffer.pending) >= MAX_BUFFERED:
            _buffer.dropped += 1
        else:
            if folded is not None:  # a minute old: write it as it is, start a new one
                _buffer.pending[(*key, id(folded))] = folded
                del _buffer.pending[key]
            _buffer.pending[key] = event
    if _buffer.thread is None and getattr(settings, "CONNECTION_LOG_BACKGROUND", True):
        start()


def start() -> None:
    """Start the flush thread (once per process); the embedded broker calls it at start."""
    start_flush_thread(_buffer, name="connection-log", interval_s=FLUSH_INTERVAL_S, flush=flush,
                       logger=logger, what="the connection log")


def dropped() -> int:
    """How many events were dropped because the buffer was full (since the process started)."""
    return _buffer.dropped


def flush() -> int:
    """Write what is buffered, in one transaction; returns how many events were written
    (folded ones counted once each). Tests and shutdown call it; the thread does otherwise."""
    with _buffer.flush_lock:
        with _buffer.lock:
            pending, _buffer.pending = list(_buffer.pending.values()), {}
            dropped_now, _buffer.dropped = _buffer.dropped, 0
        if dropped_now:
            logger.warning("Connection log: %d event(s) dropped, the buffer was full", dropped_now)
        if not pending:
            return 0
        _write(pending)
        return sum(event.count for event in pending)


def _write(pending: list[PendingEvent]) -> None:
    from django.db import transaction

    from .models import ConnectionEvent, Device, Product

    product_ids = {e.product_id for e in pending if e.product_id}
    products = {p.product_id: p for p in Product.objects.filter(product_id__in=product_ids)}
    device_ids = {e.device_id for e in pending if e.product_id in products}
    devices = {
        (d.product.product_id, d.device_id): d
        for d in Device.objects.filter(product__in=products.values(), device_id__in=device_ids)
        .select_related("product")
    }
    touched = set()
    budget = {"left": DIAGNOSIS_BUDGET_S}

    def fold_target(event, product, device):
        window_start = event.at - timedelta(seconds=FOLD_WINDOW_S)
        return (
            ConnectionEvent.objects.filter(
                product=product, device=device, kind=event.kind, code=event.code,
                client_id=event.client_id, peer_host=peer_host(event.peer),
                first_at__gt=window_start,
            )
            .order_by("-first_at", "-id")
            .only("pk", "last_at")
            .first()
        )

    # The findings (the diagnosis: CPU work, both languages) are made before the transaction,
    # for the events that will not fold into an earlier row, so that the write lock (SQLite has
    # one for all processes) is held only for the writes. A fold that appears meanwhile wins.
    # Only refusals are diagnosed (an accepted CONNECT's clock warnings and an end of session
    # cost next to nothing), so only they are looked up here.
    findings = {}
    for index, event in enumerate(pending):
        if not _needs_diagnosis(event):
            continue
        product = products.get(event.product_id)
        device = devices.get((event.product_id, event.device_id)) if product else None
        if fold_target(event, product, device) is None:
            findings[index] = _findings(event, device, budget)
    with transaction.atomic():
        for index, event in enumerate(pending):
            product = products.get(event.product_id)
            device = devices.get((event.product_id, event.device_id)) if product else None
            existing = fold_target(event, product, device)
            if existing is not None:
                from django.db.models import F

                ConnectionEvent.objects.filter(pk=existing.pk).update(
                    count=F("count") + event.count, last_at=max(existing.last_at, event.at)
                )
                continue
            ConnectionEvent.objects.create(
                product=product, device=device, first_at=event.first_at, last_at=event.at,
                kind=event.kind, broker=event.broker, peer=event.peer,
                peer_host=peer_host(event.peer), transport=event.transport,
                protocol=event.protocol, client_id=event.client_id,
                named_device_id=_cut(event.device_id or "", 64), connack=event.connack,
                code=event.code, count=event.count,
                findings=findings[index] if index in findings else _findings(event, device, budget),
                session_seconds=event.session_seconds, taker_peer=event.taker_peer,
                taker_client_id=event.taker_client_id,
            )
            touched.add((product.pk if product else None, device.pk if device else None))
            event.password = None
        for product_pk, device_pk in touched:
            _trim(product_pk, device_pk)
    for event in pending:
        event.password = None


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
