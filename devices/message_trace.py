"""Message trace and send to device: see what a device says, and talk back (issue 13).

**Trace.** A person starts a :class:`~devices.models.Trace` (10 minutes by default, at most 60).
The embedded broker reads the running traces every ``TRACE_REFRESH_S`` into an in-memory map
(device → trace) and marks each live connection with its trace; a publish from or a delivery to a
connection without one does nothing more than read that attribute. A traced message is handed to
:func:`record`, which appends it to an in-process buffer and returns; a daemon thread writes the
buffer every ``FLUSH_INTERVAL_S`` (:func:`flush`): never a database write on the message path.
At most ``MAX_MESSAGES`` rows per trace, each with the first ``PAYLOAD_BYTES`` of the payload.
With EMQX the portal creates a temporary rule instead (devices.emqx_trace) whose HTTP action
posts each of the device's messages to ``/mqtt/trace``; only traced devices have a rule.

**Send.** The web process cannot reach into the broker process, so a send is a
:class:`~devices.models.DeviceMessage` row (an outbox): the broker picks up new rows every
``OUTBOX_POLL_S``, publishes through the device's live connection (QoS 1 waits for its PUBACK)
and writes the answer on the row; the request waits for it up to ``SEND_WAIT_S``. A row in the
database was chosen over a control socket because it needs no port, no extra token and no
discovery of where the broker runs, works with SQLite and PostgreSQL alike, and leaves a record
of every send; the cost is one indexed query per poll.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from . import emqx
from .background import start_flush_thread
from .choices import SEND_QOS_LEVELS, PayloadEncoding, SendResult
from .topics import send_topic_problem, topic_matches, topic_spaces

logger = logging.getLogger("devices.message_trace")

MAX_MESSAGES = 200
PAYLOAD_BYTES = 1024
DEFAULT_MINUTES = 10
MAX_MINUTES = 60
MAX_SEND_BYTES = 64 * 1024
FLUSH_INTERVAL_S = 0.25
TRACE_REFRESH_S = 0.5  # how often the embedded broker reads the running traces
OUTBOX_POLL_S = 0.2  # how often the embedded broker looks for messages to send
SEND_WAIT_S = 5.0  # how long a request waits for the broker's answer
PUBACK_WAIT_S = 3.0  # how long the broker waits for the device's PUBACK (QoS 1)
EXPIRED = "expired"  # DeviceMessage.result when no broker answered in time


class MessageError(Exception):
    """A request the portal refuses: an HTTP status, a stable code, words, the field."""

    def __init__(self, status, code, message, field=None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def enabled() -> bool:
    return getattr(settings, "MESSAGE_TRACE", True)


# -- traces -------------------------------------------------------------------------------------


def parse_minutes(value) -> int:
    if value is None:
        return DEFAULT_MINUTES
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MINUTES:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return parse_minutes(int(value.strip()))
        raise MessageError(
            400, "invalid_minutes",
            _("minutes must be a whole number from 1 to %(max)d.") % {"max": MAX_MINUTES},
            "minutes",
        )
    return value


def running_trace(device):
    from .models import Trace

    return Trace.objects.filter(device=device, stopped=False, until__gt=timezone.now()).first()


def start_trace(device, user, minutes=None):
    """A new trace of ``device`` (one runs at a time: a running one is stopped first)."""
    from .models import AuditEvent, Trace

    minutes = parse_minutes(minutes)
    for old in Trace.objects.filter(device=device, stopped=False, until__gt=timezone.now()):
        stop_trace(old)
    now = timezone.now()
    trace = Trace.objects.create(
        device=device, started_by=user if user is not None and user.is_authenticated else None,
        started_at=now, until=now + timedelta(minutes=minutes),
    )
    if emqx.enabled():
        from . import emqx_trace

        try:
            emqx_trace.create_rule(trace)
        except emqx_trace.EmqxTraceError as error:
            trace.delete()
            raise MessageError(
                502, "emqx_unavailable",
                _("EMQX did not create the trace rule: %(detail)s") % {"detail": error}, None,
            ) from error
    AuditEvent.record(AuditEvent.Action.START_TRACE, user, [device],
                      detail=f"trace {trace.pk}, {minutes} min")
    return trace


def stop_trace(trace) -> None:
    """Stop now: ``until`` becomes now, so a message buffered after it is not written."""
    from .models import Trace

    now = timezone.now()
    Trace.objects.filter(pk=trace.pk).update(stopped=True, until=min(trace.until, now))
    trace.stopped, trace.until = True, min(trace.until, now)
    if trace.emqx_rule_id:
        from . import emqx_trace

        emqx_trace.delete_rule(trace)


def running_traces() -> dict[int, int]:
    """{device pk: trace pk} of the running traces (the embedded broker's map)."""
    from .models import Trace

    return dict(
        Trace.objects.filter(stopped=False, until__gt=timezone.now())
        .order_by("started_at").values_list("device_id", "pk")
    )


def prune(days: int | None = None, now=None) -> int:
    """Delete traces (and their messages) that ended more than ``days`` ago; delete the EMQX
    rules of ended traces that still have one."""
    from .models import DeviceMessage, Trace

    now = now or timezone.now()
    for trace in Trace.objects.filter(until__lte=now).exclude(emqx_rule_id=""):
        from . import emqx_trace

        emqx_trace.delete_rule(trace)
    days = settings.TRACE_RETENTION_DAYS if days is None else days
    cutoff = now - timedelta(days=days)
    deleted, _ = Trace.objects.filter(until__lt=cutoff).delete()
    DeviceMessage.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# -- recording (the broker's side; no database work on the caller's path) --------------------------


class _Buffer:
    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[int, list[tuple]] = {}
        self.thread: threading.Thread | None = None
        self.flush_lock = threading.Lock()


_buffer = _Buffer()


def _after_fork_in_child():
    global _buffer
    _buffer = _Buffer()


os.register_at_fork(after_in_child=_after_fork_in_child)


def record(trace_id: int, direction: str, topic: str, qos: int, data, refused: bool = False) -> None:
    """Note one message of a traced device; returns at once (the flush thread writes it)."""
    data = bytes(data or b"")
    entry = (timezone.now(), direction, topic, qos or 0, len(data), data[:PAYLOAD_BYTES], refused)
    with _buffer.lock:
        waiting = _buffer.pending.setdefault(trace_id, [])
        if len(waiting) < MAX_MESSAGES:  # more could never be kept
            waiting.append(entry)
    if _buffer.thread is None and getattr(settings, "CONNECTION_LOG_BACKGROUND", True):
        start()


def start() -> None:
    start_flush_thread(_buffer, name="message-trace", interval_s=FLUSH_INTERVAL_S, flush=flush,
                       logger=logger, what="traced messages")


def flush() -> int:
    """Write what is buffered, one transaction per trace; returns how many rows were written.
    Messages after the trace's ``until`` (stopped or expired) and beyond its bound are dropped."""
    from .models import Trace

    with _buffer.flush_lock:
        with _buffer.lock:
            pending, _buffer.pending = _buffer.pending, {}
        written = 0
        for trace_id, entries in pending.items():
            with transaction.atomic():
                trace = Trace.objects.filter(pk=trace_id).values("until", "message_count").first()
                if trace is None:
                    continue
                kept = [e for e in entries if e[0] <= trace["until"]]
                kept = kept[: max(0, MAX_MESSAGES - trace["message_count"])]
                written += store(trace_id, kept)
        return written


def store(trace_id: int, entries: list[tuple]) -> int:
    from .models import Trace, TraceMessage

    if not entries:
        return 0
    TraceMessage.objects.bulk_create(
        [TraceMessage(trace_id=trace_id, at=at, direction=direction, topic=topic, qos=qos,
                      size=size, payload=payload, refused=refused)
         for at, direction, topic, qos, size, payload, refused in entries]
    )
    Trace.objects.filter(pk=trace_id).update(message_count=F("message_count") + len(entries))
    return len(entries)


def record_now(trace, direction, topic, qos, data) -> bool:
    """Write one message at once (the EMQX hook, which is called only for traced devices):
    the bound is kept by one conditional UPDATE, so that concurrent hooks never pass it."""
    from .models import Trace

    data = bytes(data or b"")
    now = timezone.now()
    with transaction.atomic():
        claimed = Trace.objects.filter(
            pk=trace.pk, stopped=False, until__gt=now, message_count__lt=MAX_MESSAGES
        ).update(message_count=F("message_count") + 1)
        if not claimed:
            return False
        from .models import TraceMessage

        TraceMessage.objects.create(trace_id=trace.pk, at=now, direction=direction, topic=topic,
                                    qos=qos or 0, size=len(data), payload=data[:PAYLOAD_BYTES])
    return True


# -- showing ----------------------------------------------------------------------------------------


def decode_payload(data: bytes, size: int) -> tuple[str, str]:
    """(text, "utf8") when the payload is UTF-8 (a cut at 1 KiB may split the last character),
    else (hex, "hex")."""
    data = bytes(data)
    cuts = range(4) if size > len(data) else range(1)
    for cut in cuts:
        try:
            return data[: len(data) - cut].decode("utf-8"), PayloadEncoding.UTF8
        except UnicodeDecodeError:
            continue
    return data.hex(), PayloadEncoding.HEX


def pretty(text: str, encoding: str) -> str:
    """JSON pretty-printed (for display); anything else as it is."""
    if encoding != PayloadEncoding.UTF8 or text.strip()[:1] not in ("{", "["):
        return text
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def message_to_dict(message) -> dict:
    payload, encoding = decode_payload(message.payload, message.size)
    return {
        "id": message.pk,
        "at": message.at.isoformat(),
        "direction": message.direction,
        "topic": message.topic,
        "qos": message.qos,
        "size": message.size,
        "payload": payload,
        "encoding": encoding,
        "truncated": message.size > len(bytes(message.payload)),
        "refused": message.refused,
    }


def trace_to_dict(trace, after: int | None = None) -> dict:
    messages = trace.messages.order_by("id")
    if after is not None:
        messages = messages.filter(pk__gt=after)
    return {
        "id": trace.pk,
        "productId": trace.device.product.product_id,
        "deviceId": trace.device.device_id,
        "startedAt": trace.started_at.isoformat(),
        "until": trace.until.isoformat(),
        "running": trace.running,
        "stopped": trace.stopped,
        "messageCount": trace.message_count,
        "limit": MAX_MESSAGES,
        "messages": [message_to_dict(m) for m in messages[:MAX_MESSAGES]],
    }


# -- sending --------------------------------------------------------------------------------------


def topic_error_message(device, problem: str) -> str:
    spaces = topic_spaces(device.product.product_id, device.device_id)
    where = {"first": spaces[0] + "/…", "second": spaces[1] + "/…"}
    if problem == "wildcard":
        return _("A topic to send to has no wildcards (+ #); use one inside %(first)s or "
                 "%(second)s.") % where
    if problem == "too_long":
        return _("The topic is longer than 65535 bytes.")
    return _("The topic must lie inside the device's topic space: %(first)s or %(second)s.") % where


def validate_send(device, topic, payload, qos) -> tuple[str, bytes, int]:
    problem = send_topic_problem(device.product.product_id, device.device_id, topic)
    if problem:
        raise MessageError(400, "invalid_topic", topic_error_message(device, problem), "topic")
    if payload is None:
        payload = ""
    if not isinstance(payload, str):
        raise MessageError(400, "invalid_payload", _("payload must be a string (text)."), "payload")
    data = payload.encode("utf-8", "surrogatepass")
    if len(data) > MAX_SEND_BYTES:
        raise MessageError(400, "invalid_payload",
                           _("payload must be at most %(max)d bytes.") % {"max": MAX_SEND_BYTES},
                           "payload")
    if isinstance(qos, str) and qos.strip() in [str(level) for level in SEND_QOS_LEVELS]:
        qos = int(qos.strip())
    if isinstance(qos, bool) or qos not in SEND_QOS_LEVELS:
        raise MessageError(400, "invalid_qos", _("qos must be 0 or 1 (QoS 2 is not supported)."),
                           "qos")
    return topic, data, qos


def send_to_device(device, topic, payload, qos, user, wait_s: float | None = None) -> dict:
    """Send one message to ``device``; returns the answer (INTERFACES.md, POST .../messages)."""
    from .models import AuditEvent

    topic, data, qos = validate_send(device, topic, payload, qos)
    AuditEvent.record(AuditEvent.Action.SEND_MESSAGE, user, [device],
                      detail=f"{topic[:200]} QoS {qos}, {len(data)} bytes")
    if emqx.enabled():
        from . import emqx_trace

        return emqx_trace.send(device, topic, data, qos)
    return _send_through_outbox(device, topic, data, qos, user,
                                SEND_WAIT_S if wait_s is None else wait_s)


def _send_through_outbox(device, topic, data, qos, user, wait_s) -> dict:
    from .models import DeviceMessage

    message = DeviceMessage.objects.create(
        device=device, topic=topic, payload=data, qos=qos,
        requested_by=user if user is not None and user.is_authenticated else None,
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        row = DeviceMessage.objects.filter(pk=message.pk).values("result", "subscriptions").first()
        if row and row["result"]:
            return send_answer(message.pk, row["result"], row["subscriptions"], topic, qos)
    if DeviceMessage.objects.filter(pk=message.pk, result="").update(result=EXPIRED):
        raise MessageError(
            503, "broker_unavailable",
            _("The broker did not answer within %(seconds)d seconds; is it running?")
            % {"seconds": wait_s}, None,
        )
    row = DeviceMessage.objects.filter(pk=message.pk).values("result", "subscriptions").first()
    return send_answer(message.pk, row["result"], row["subscriptions"], topic, qos)


def sent_words(topic, qos, subscriptions, through_emqx=False) -> str:
    """What "sent" means for this send: a QoS 1 send is "sent" when the device's subscription
    is QoS 0 (so the message went at QoS 0), when EMQX sent it (it does not wait for the PUBACK),
    or when the device sent no PUBACK within PUBACK_WAIT_S."""
    granted = [q for f, q in subscriptions or [] if topic_matches(topic, f)]
    if qos == 0:
        return str(SendResult.SENT.label)
    if granted and max(granted) == 0:
        return _("Sent at QoS 0 (the device subscribed at QoS 0): no acknowledgement.")
    if through_emqx:
        return _("Sent through EMQX, which does not wait for the device's PUBACK.")
    return _("Sent to the device, but it sent no PUBACK within %(seconds)d seconds.") % {
        "seconds": PUBACK_WAIT_S}


def send_answer(message_id, result, subscriptions, topic, qos, through_emqx=False) -> dict:
    if result == SendResult.SENT:
        words = sent_words(topic, qos, subscriptions, through_emqx)
    else:
        words = str(SendResult(result).label) if result in SendResult.values else result
    return {
        "id": message_id,
        "result": result,
        "message": words,
        "topic": topic,
        "qos": qos,
        "subscriptions": [{"topic": f, "qos": q} for f, q in subscriptions or []],
    }


# -- the embedded broker's database work (called on its worker threads) ------------------------


def due_sends(skip=()) -> list[tuple]:
    """Messages waiting for the broker: (pk, device pk, topic, payload, qos), oldest first."""
    from .models import DeviceMessage

    fresh = timezone.now() - timedelta(seconds=SEND_WAIT_S)
    rows = (DeviceMessage.objects.filter(result="", created_at__gt=fresh)
            .exclude(pk__in=list(skip)).order_by("pk")
            .values_list("pk", "device_id", "topic", "payload", "qos")[:50])
    return [(pk, device, topic, bytes(payload), qos) for pk, device, topic, payload, qos in rows]


def answer_send(pk: int, result: str, subscriptions: list) -> None:
    from .models import DeviceMessage

    DeviceMessage.objects.filter(pk=pk, result="").update(
        result=result, subscriptions=[list(s) for s in subscriptions], answered_at=timezone.now()
    )


def write_subscriptions(changes: dict) -> None:
    """{device pk: [[filter, qos], ...] or None (disconnected)} in one transaction."""
    from .models import Device, DeviceSubscriptions

    now = timezone.now()
    with transaction.atomic():
        gone = [pk for pk, filters in changes.items() if filters is None]
        if gone:
            DeviceSubscriptions.objects.filter(device_id__in=gone).delete()
        present = set(Device.objects.filter(
            pk__in=[pk for pk, f in changes.items() if f is not None]).values_list("pk", flat=True))
        for pk, filters in changes.items():
            if filters is not None and pk in present:
                DeviceSubscriptions.objects.update_or_create(
                    device_id=pk, defaults={"filters": filters, "updated_at": now})


def clear_subscriptions() -> int:
    """At the broker's start: nobody is connected, so nobody has subscriptions."""
    from .models import DeviceSubscriptions

    return DeviceSubscriptions.objects.all().delete()[0]


def current_subscriptions(device) -> list[tuple[str, int]]:
    from .models import DeviceSubscriptions

    row = DeviceSubscriptions.objects.filter(device=device).first()
    return [tuple(f) for f in row.filters] if row else []

