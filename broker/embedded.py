"""The embedded MQTT broker: amqtt 0.12.1, taught the platform's rules (spec §1–4).

amqtt by itself would, for this portal, be wrong in several ways (each checked against its
source before this was written), so :class:`PortalBroker` takes over the start of every
connection (``_client_connected``) and keeps amqtt's message loop for the rest:

* amqtt deletes or takes over the session of a clientId *before* it authenticates, so a client
  with a wrong password could disconnect a device. Here the CONNECT is read, checked and
  verified first (``broker.verifier``, which calls ``devices.signing``); nothing of any other
  connection is touched until the device is accepted.
* amqtt takes over by clientId; the spec takes over by device (productId + deviceId) whatever
  clientIds were used, and refuses newcomers while an ``exclusive=true`` connection lives.
  Every connection gets a private amqtt session id, so two connections never share amqtt state
  (sessions are therefore never resumed: CONNACK always says "no session present").
* amqtt hangs on an MQTT 5.0 CONNECT and closes 3.1 silently; here both get CONNACK 0x01
  ("unacceptable protocol version") at once.
* wills, QoS 2 publishes and retained publishes are refused (spec §1), subscriptions are
  granted at most QoS 1, and nothing is ever retained.
* topic rights (spec §4) are an amqtt topic plugin, :class:`DeviceTopicPlugin`.
* amqtt never enforces the keep-alive; here a silent client is dropped after 1.5 × keep-alive,
  so that a device that vanished is shown offline.

Device status goes through ``Device.objects.mark_online/mark_offline`` on one worker thread (so
the writes for one device keep their order). At start, every device shown online is marked
offline: this broker is the only one writing status for its database (the embedded, single
machine case); with EMQX the hooks keep status instead and this broker is not run.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from amqtt.adapters import BufferReader, ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.packet import CONNECT, MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session
from django.db import close_old_connections
from transitions import MachineError

from devices import connection_log, message_trace
from devices.choices import ConnectionBroker, ConnectionKind, SendResult, TraceDirection, refusal
from devices.logsafe import MAX_TEXT_CHARS, shown

from . import verifier
from .loader import DeviceLoader, fetch_records

logger = logging.getLogger("broker.embedded")

CONNECT_TIMEOUT_S = 10  # a client must send its CONNECT within this time
MAX_CONNECT_BYTES = 64 * 1024
WATCH_INTERVAL_S = 0.5  # how often connected devices are checked for disable/rotation/deletion
STATUS_BATCH_S = 0.1  # status changes are written together, at most this often
STATUS_RETRY_S = 1.0  # after a failed batch (each try itself waits for the database's lock timeout)
SESSION_KEY = "portal.connection"
# The collector's thresholds for the broker process (``tune_gc``): youngest generation, then how
# many collections of one generation make one of the next.
GC_THRESHOLDS = (50_000, 20, 100)
_PROTOCOL_NAMES = {("MQTT", 4): "3.1.1", ("MQIsdp", 3): "3.1", ("MQTT", 5): "5.0"}


def _connack(code: int) -> bytes:
    """A MQTT 3.1.1 CONNACK (session present = 0) with ``code``."""
    return bytes((0x20, 0x02, 0x00, code))


@dataclass(eq=False)
class DeviceConnection:
    """One accepted connection of a device; what the takeover, watcher and status need."""

    product_id: str
    device_id: str
    device_pk: int
    client_id: str
    exclusive: bool
    transport: str
    secret_rotated_at: object
    session_id: str
    handler: PortalProtocolHandler | None = None
    closing_reason: str | None = None
    # The connection log's stable code for why it ended (devices.choices.SESSION_END_TEXT), and
    # for a takeover, who took over.
    closing_code: str | None = None
    taker: tuple[str, str] | None = None
    peer: str = ""
    saw_disconnect: bool = False
    connected_at: float = field(default_factory=time.monotonic)
    # The running trace of this device (devices.message_trace), set by the broker's trace watch;
    # None: its messages cost nothing more than reading this.
    trace_id: int | None = None

    @property
    def key(self):
        return (self.product_id, self.device_id)

    @property
    def name(self):
        return f"{self.product_id}/{self.device_id}"

    async def close(self, reason: str, code: str = "unknown",
                    taker: tuple[str, str] | None = None) -> None:
        """Drop the connection (MQTT 3.1.1 has no server DISCONNECT: the socket is closed).
        ``reason`` is for the broker's log; ``code`` is the connection log's (stable). A
        takeover is the platform's rule at work (spec §4), logged at INFO like a connect; the
        other reasons (disabled, rotated, a broken profile, a silent client) are warnings."""
        if self.closing_reason is None:
            self.closing_reason = reason
            self.closing_code = code
            self.taker = taker
            logger.log(
                logging.INFO if code == "taken_over" else logging.WARNING,
                "Disconnecting %s (clientId %r): %s", self.name, shown(self.client_id),
                shown(reason, MAX_TEXT_CHARS),
            )
        if self.handler is not None:
            await self.handler.close_connection()


class SessionStates:
    """What amqtt asks of ``Session.transitions`` (``state``, ``connect()``, ``disconnect()``,
    ``is_connected()``), with the transitions of amqtt's own machine: connect from new or
    disconnected, disconnect from anywhere, connect while connected raises ``MachineError``.
    amqtt builds a ``transitions.Machine`` for every session, which cost about a third of the
    broker's CPU per connection (profiled: 0.3 ms); this is a few attributes."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session):
        self._session = session
        self.state = "new"

    def connect(self) -> bool:
        if self.state == "connected":
            raise MachineError("Can't trigger event connect from state connected!")
        self.state = "connected"
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        self.state = "disconnected"
        self._session._on_enter_disconnected()
        return True

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


class PortalSession(Session):
    """amqtt's Session with :class:`SessionStates` in place of its per-session state machine."""

    def _init_states(self) -> None:
        self.transitions = SessionStates(self)


class PortalProtocolHandler(BrokerProtocolHandler):
    """amqtt's broker handler with the spec's publish profile and an enforced keep-alive."""

    def connection(self) -> DeviceConnection | None:
        return self.session.attributes.get(SESSION_KEY) if self.session else None

    async def close_connection(self) -> None:
        """End the message loop; safe before ``start()`` (the broker checks the flag after)."""
        if self._disconnect_waiter is not None:
            await self.handle_connection_closed()

    async def handle_publish(self, publish_packet) -> None:
        conn = self.connection()
        if conn is None:
            await self.close_connection()
            return
        verdict = verifier.authorize_topic(
            conn.product_id, conn.device_id, "publish", publish_packet.topic_name or "",
            publish_packet.qos or 0, bool(publish_packet.retain_flag),
        )
        if verdict.profile:
            await conn.close(f"PUBLISH to {shown(publish_packet.topic_name)!r} refused: {verdict.reason}",
                             verdict.code)
            return
        # Outside the topic space: amqtt asks DeviceTopicPlugin, which drops it and logs why.
        await super().handle_publish(publish_packet)

    def handle_read_timeout(self) -> None:
        # The reader waited 1.5 × keep-alive without a packet (MQTT 3.1.1 §3.1.2.10).
        conn = self.connection()
        if conn is not None:
            asyncio.ensure_future(conn.close("no packet within 1.5 × keep-alive", "keepalive_timeout"))

    async def handle_disconnect(self, disconnect) -> None:
        conn = self.connection()
        if conn is not None and disconnect is not None:
            conn.saw_disconnect = True  # a DISCONNECT packet, not a lost connection
        await super().handle_disconnect(disconnect)


class TracingProtocolHandler(PortalProtocolHandler):
    """The handler when the message trace is on: a traced connection's publishes and deliveries
    go to the trace's buffer (devices.message_trace.record, no database work); an untraced one's
    cost one attribute read."""

    async def handle_publish(self, publish_packet) -> None:
        conn = self.connection()
        if conn is not None and conn.trace_id is not None:
            verdict = verifier.authorize_topic(
                conn.product_id, conn.device_id, "publish", publish_packet.topic_name or "",
                publish_packet.qos or 0, bool(publish_packet.retain_flag),
            )
            message_trace.record(conn.trace_id, TraceDirection.FROM_DEVICE,
                                 publish_packet.topic_name or "", publish_packet.qos or 0,
                                 publish_packet.data, refused=not verdict.allowed)
        await super().handle_publish(publish_packet)

    async def mqtt_publish(self, topic, data, qos, retain, ack_timeout=None):
        conn = self.connection()
        if conn is not None and conn.trace_id is not None:
            message_trace.record(conn.trace_id, TraceDirection.TO_DEVICE, topic, qos or 0, data)
        return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)


class DeviceTopicPlugin(BaseTopicPlugin):
    """Topic rights (spec §4): publish and subscribe only inside the device's own space."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        conn = session.attributes.get(SESSION_KEY) if session is not None else None
        if conn is None:
            return False
        if action == Action.RECEIVE:
            return True  # it only receives what its own subscriptions (all inside) match
        # The QoS and retain flag were judged by handle_publish; a subscription's QoS is capped.
        verdict = verifier.authorize_topic(
            conn.product_id, conn.device_id,
            "publish" if action == Action.PUBLISH else "subscribe", topic or "",
        )
        if not verdict.allowed:
            verb = "publish to" if action == Action.PUBLISH else "subscribe to"
            logger.warning(
                "Refused %s %r by %s (clientId %r): %s",
                verb,
                shown(topic),
                conn.name,
                shown(conn.client_id),
                verdict.reason,
            )
        return verdict.allowed


def _run_in_django(function, *args):
    """Run ORM work on a worker thread. Each thread keeps its connection (opening one per CONNECT
    is wasted work at hundreds of CONNECTs a second); a connection that failed is closed, so the
    next call opens a new one."""
    try:
        return function(*args)
    except Exception:
        close_old_connections()
        from django.db import connection

        connection.close()
        raise


def _write_status(went_online, now_offline):
    """One transaction for a batch: who connected (first activation, last online), who is gone."""
    from django.db import transaction

    from devices.models import Device

    with transaction.atomic():
        for start in range(0, len(went_online), 500):
            Device.objects.filter(pk__in=went_online[start : start + 500]).mark_online()
        for start in range(0, len(now_offline), 500):
            Device.objects.filter(pk__in=now_offline[start : start + 500]).mark_offline()


def _mark_all_offline():
    from devices.models import Device, DeviceStatus

    return Device.objects.filter(status=DeviceStatus.ONLINE).mark_offline()


def _watch_rows(pks):
    from devices.models import Device

    rows = {}
    pks = list(pks)
    for start in range(0, len(pks), 500):
        for pk, enabled, rotated in Device.objects.filter(pk__in=pks[start : start + 500]).values_list(
            "pk", "enabled", "secret_rotated_at"
        ):
            rows[pk] = (enabled, rotated)
    return rows


class PortalBroker(Broker):
    """amqtt's Broker with the platform's authentication, session rules and profile."""

    def __init__(self, config: dict, transports: dict[str, str], **kwargs):
        config = dict(config)
        config.setdefault("plugins", {"broker.embedded.DeviceTopicPlugin": {}})
        super().__init__(config, **kwargs)
        self.transports = transports  # listener name → "tcp" | "tls"
        self.live: dict[tuple[str, str], DeviceConnection] = {}
        self._admission = asyncio.Lock()
        self._ids = itertools.count(1)
        self._auth_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="broker-auth")
        self._loader = DeviceLoader(lambda keys: self._db(self._auth_pool, fetch_records, keys))
        # Status changes wait here (device pk → [went online, online now]) and are written in
        # batches by one task: two UPDATEs per connection cost more than the authentication did.
        self._status_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-status")
        self._pending_status: dict[int, list[bool]] = {}
        self._status_waiting = asyncio.Event()
        self._watch_task: asyncio.Task | None = None
        self._status_task: asyncio.Task | None = None
        # Message trace and send to device (devices.message_trace): the running traces
        # (device pk → trace pk), subscription changes to write (device pk → filters | None),
        # and the sends being delivered.
        self.tracing = message_trace.enabled()
        self._handler_class = TracingProtocolHandler if self.tracing else PortalProtocolHandler
        self._traced: dict[int, int] = {}
        self._pending_subscriptions: dict[int, list | None] = {}
        self._sending: set[int] = set()
        self._trace_tasks: list[asyncio.Task] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        connection_log.start()
        stale = await self._db(self._status_pool, _mark_all_offline)
        if stale:
            logger.info("Marked %d device(s) offline that a previous broker left online", stale)
        await super().start()
        self._watch_task = asyncio.create_task(self._watch_devices())
        self._status_task = asyncio.create_task(self._write_status_batches())
        if self.tracing:
            message_trace.start()
            await self._db(self._status_pool, message_trace.clear_subscriptions)
            self._trace_tasks = [asyncio.create_task(self._watch_traces()),
                                 asyncio.create_task(self._watch_outbox())]

    async def shutdown(self) -> None:
        for task in (self._watch_task, self._status_task, *self._trace_tasks):
            if task:
                task.cancel()
        for conn in list(self.live.values()):
            self._status(conn, online=False)
            if conn.closing_code is None:
                conn.closing_reason, conn.closing_code = "the broker stopped", "broker_shutdown"
        self.live.clear()
        await super().shutdown()
        if not await self._flush_status():
            logger.error("The broker stops: %d device status change(s) are not recorded",
                         len(self._pending_status))
        try:
            await self._db(self._status_pool, connection_log.flush)
            if self.tracing:
                await self._db(self._status_pool, message_trace.flush)
                await self._db(self._status_pool, message_trace.clear_subscriptions)
        except Exception as error:  # the log is not worth a failed shutdown
            logger.error("Could not write the connection log at shutdown: %s", type(error).__name__)
        self._auth_pool.shutdown(wait=False)
        self._status_pool.shutdown(wait=True)

    async def _db(self, pool, function, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, _run_in_django, function, *args)

    def _status(self, conn: DeviceConnection, online: bool) -> None:
        """Note a status change; the batch writer stores it within STATUS_BATCH_S."""
        entry = self._pending_status.setdefault(conn.device_pk, [False, online])
        entry[0] = entry[0] or online
        entry[1] = online
        self._status_waiting.set()

    async def _flush_status(self) -> bool:
        """Write the pending status changes in one transaction. When that fails (a database
        locked longer than its timeout), they are kept and written by a later batch."""
        pending, self._pending_status = self._pending_status, {}
        if not pending:
            return True
        went_online = [pk for pk, (seen_online, _now) in pending.items() if seen_online]
        now_offline = [pk for pk, (_seen, online_now) in pending.items() if not online_now]
        try:
            await self._db(self._status_pool, _write_status, went_online, now_offline)
        except Exception as error:  # status is not worth a broken connection
            self._keep_unwritten(pending)
            logger.error(
                "Could not record the status of %d device(s) (%s); kept, tried again in %.0f s",
                len(pending), error, STATUS_RETRY_S,
            )
            return False
        return True

    def _keep_unwritten(self, unwritten: dict[int, list[bool]]) -> None:
        """Put back changes a batch could not write, beneath those noted since: the newer state
        wins, and "went online" (first activation, last online) is never lost."""
        for pk, (went_online, online_now) in unwritten.items():
            newer = self._pending_status.get(pk)
            if newer is None:
                self._pending_status[pk] = [went_online, online_now]
            else:
                newer[0] = newer[0] or went_online

    async def _write_status_batches(self) -> None:
        while True:
            await self._status_waiting.wait()
            self._status_waiting.clear()
            await self._flush_subscriptions()
            if await self._flush_status():
                await asyncio.sleep(STATUS_BATCH_S)
            else:
                self._status_waiting.set()
                await asyncio.sleep(STATUS_RETRY_S)

    async def _watch_devices(self) -> None:
        """Disconnect devices that were disabled, deleted or got a new secret (spec §4: ≤ 2 s)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            conns = list(self.live.values())
            if not conns:
                continue
            try:
                rows = await self._db(self._auth_pool, _watch_rows, {c.device_pk for c in conns})
            except Exception as error:  # the registry may be briefly unavailable
                logger.error("Could not check connected devices: %s", error)
                continue
            for conn in conns:
                row = rows.get(conn.device_pk)
                if row is None:
                    reason, code = "the device was deleted", "kicked_deleted"
                elif not row[0]:
                    reason, code = "the device was disabled", "kicked_disabled"
                elif row[1] is not None and (
                    conn.secret_rotated_at is None or row[1] > conn.secret_rotated_at
                ):
                    reason, code = "the device's secret was rotated", "kicked_secret_rotated"
                else:
                    continue
                await conn.close(reason, code)

    # -- message trace, subscriptions and send to device (devices.message_trace) -------------

    async def _watch_traces(self) -> None:
        """Keep ``_traced`` and every live connection's ``trace_id`` current (≤ TRACE_REFRESH_S)."""
        while True:
            try:
                self._traced = await self._db(self._auth_pool, message_trace.running_traces)
            except Exception as error:  # the registry may be briefly unavailable
                logger.error("Could not read the running message traces: %s", error)
            for conn in list(self.live.values()):
                conn.trace_id = self._traced.get(conn.device_pk)
            await asyncio.sleep(message_trace.TRACE_REFRESH_S)

    def session_subscriptions(self, session: Session) -> list[list]:
        return [[topic_filter, qos] for topic_filter, subscribers in self._subscriptions.items()
                for subscriber, qos in subscribers if subscriber is session]

    def _note_subscriptions(self, conn: DeviceConnection | None, filters: list | None) -> None:
        if self.tracing and conn is not None:
            self._pending_subscriptions[conn.device_pk] = filters
            self._status_waiting.set()

    async def _flush_subscriptions(self) -> None:
        pending, self._pending_subscriptions = self._pending_subscriptions, {}
        if not pending:
            return
        try:
            await self._db(self._status_pool, message_trace.write_subscriptions, pending)
        except Exception as error:  # shown on a page only; the next change writes it again
            logger.error("Could not record the subscriptions of %d device(s): %s", len(pending), error)

    async def _handle_subscription(self, client_session, handler, subscribe_waiter) -> None:
        await super()._handle_subscription(client_session, handler, subscribe_waiter)
        conn = client_session.attributes.get(SESSION_KEY)
        self._note_subscriptions(conn, self.session_subscriptions(client_session))

    async def _handle_unsubscription(self, client_session, handler, unsubscribe_waiter) -> None:
        await super()._handle_unsubscription(client_session, handler, unsubscribe_waiter)
        conn = client_session.attributes.get(SESSION_KEY)
        self._note_subscriptions(conn, self.session_subscriptions(client_session))

    async def _watch_outbox(self) -> None:
        """Deliver the messages people send to devices (DeviceMessage rows), within OUTBOX_POLL_S."""
        while True:
            await asyncio.sleep(message_trace.OUTBOX_POLL_S)
            try:
                due = await self._db(self._auth_pool, message_trace.due_sends, set(self._sending))
            except Exception as error:
                logger.error("Could not read the messages to send: %s", error)
                continue
            for row in due:
                self._sending.add(row[0])
                asyncio.create_task(self._deliver(*row))

    async def _deliver(self, pk: int, device_pk: int, topic: str, data: bytes, qos: int) -> None:
        try:
            result, filters = await self.deliver_to_device(device_pk, topic, data, qos)
            await self._db(self._auth_pool, message_trace.answer_send, pk, result, filters)
        except Exception as error:
            logger.error("Could not send message %s: %s", pk, shown(error, MAX_TEXT_CHARS))
        finally:
            self._sending.discard(pk)

    async def deliver_to_device(self, device_pk: int, topic: str, data: bytes, qos: int):
        """(SendResult, the device's subscriptions): publish through the device's own
        connection only, at the lower of the asked QoS and its subscription's; QoS 1 waits for
        the device's PUBACK."""
        conn = next((c for c in self.live.values() if c.device_pk == device_pk), None)
        handler = conn.handler if conn is not None else None
        if conn is None or conn.closing_reason is not None or handler is None or handler.session is None:
            return SendResult.NOT_CONNECTED, []
        filters = self.session_subscriptions(handler.session)
        matching = [granted for topic_filter, granted in filters if self._matches(topic, topic_filter)]
        if not matching:
            return SendResult.NO_SUBSCRIPTION, filters
        qos = min(qos, max(matching))
        try:
            await handler.mqtt_publish(topic, data, qos, False, ack_timeout=message_trace.PUBACK_WAIT_S)
        except TimeoutError:
            logger.warning("%s sent no PUBACK within %.0f s for a message from the portal",
                           conn.name, message_trace.PUBACK_WAIT_S)
            return SendResult.SENT, filters
        except (AMQTTError, ConnectionError) as error:
            logger.info("Could not send to %s: %s", conn.name, shown(error, MAX_TEXT_CHARS))
            return SendResult.NOT_CONNECTED, filters
        logger.info("Sent a message from the portal to %s on %r (QoS %d)", conn.name, shown(topic), qos)
        return (SendResult.ACKNOWLEDGED if qos == 1 else SendResult.SENT), filters

    # -- one connection ---------------------------------------------------------------------

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        server = self._servers.get(listener_name)
        if server is None:
            await writer.close()
            return
        await server.acquire_connection()
        try:
            await self._serve(listener_name, reader, writer)
        except (AMQTTError, MQTTError, NoDataError, ConnectionError) as error:
            logger.info("Connection on %s ended: %s", listener_name, shown(error, MAX_TEXT_CHARS))
        finally:
            server.release_connection()

    async def _refuse(self, writer: WriterAdapter, code: str, peer: str, why: str,
                      attempt: dict | None = None) -> None:
        """Answer a refusal code with its CONNACK (devices.choices.REFUSALS) and close.
        ``attempt`` holds the CONNECT's fields for the connection log (devices.connection_log)."""
        connack = refusal(code).connack
        connection_log.record(ConnectionKind.REFUSED, broker=ConnectionBroker.EMBEDDED, code=code,
                              connack=connack, **(attempt or {}))
        logger.warning("Refused CONNECT from %s (CONNACK 0x%02x): %s: %s", shown(peer, MAX_TEXT_CHARS),
                       connack, code, shown(why, MAX_TEXT_CHARS))
        try:
            writer.write(_connack(connack))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        await writer.close()

    async def _read_connect(self, reader: ReaderAdapter, writer: WriterAdapter, peer: str,
                            transport: str | None = None):
        """The first packet as a ConnectPacket, or None after refusing it (and closing)."""
        header = await MQTTFixedHeader.from_stream(reader)
        if header is None:
            await writer.close()
            return None
        if header.packet_type != CONNECT:
            logger.warning("Closed connection from %s: first packet is not a CONNECT", shown(peer))
            connection_log.record(ConnectionKind.REFUSED, broker=ConnectionBroker.EMBEDDED,
                                  code="not_a_connect", peer=peer, transport=transport)
            await writer.close()
            return None
        if header.remaining_length > MAX_CONNECT_BYTES:
            logger.warning("Closed connection from %s: CONNECT of %d bytes", shown(peer), header.remaining_length)
            await writer.close()
            return None
        body = await reader.read(header.remaining_length)
        name_length = int.from_bytes(body[0:2], "big") if len(body) >= 2 else 0
        name = body[2 : 2 + name_length].decode("utf-8", "replace")
        level = body[2 + name_length] if len(body) > 2 + name_length else None
        if (name, level) != ("MQTT", 4):
            version = _PROTOCOL_NAMES.get((name, level), f"{shown(name)!r} level {level}")
            await self._refuse(
                writer, "unsupported_protocol", peer,
                f"MQTT {version} is not spoken by the embedded broker (MQTT 3.1.1 only; "
                "use the EMQX set-up for 3.1 and 5.0)",
                {"peer": peer, "transport": transport, "protocol": str(version)},
            )
            return None
        packet = await ConnectPacket.from_stream(BufferReader(bytes(body)), fixed_header=header)
        return packet

    async def _serve(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        peer_info = writer.get_peer_info()
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else "?"
        transport = self.transports.get(listener_name)
        try:
            connect = await asyncio.wait_for(self._read_connect(reader, writer, peer, transport),
                                             CONNECT_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, NoDataError, MQTTError, AMQTTError, UnicodeDecodeError, IndexError) as error:
            logger.warning("Closed connection from %s: no valid CONNECT (%s)", shown(peer), type(error).__name__)
            connection_log.record(ConnectionKind.REFUSED, broker=ConnectionBroker.EMBEDDED,
                                  code="not_a_connect", peer=peer, transport=transport)
            await writer.close()
            return
        if connect is None:
            return

        variable = connect.variable_header
        mqtt_client_id = connect.payload.client_id if not connect.payload.client_id_is_random else ""
        username = connect.payload.username
        who = f"{peer} over {transport} (mqttClientId {shown(mqtt_client_id)!r}, username {shown(username)!r})"
        attempt = {"peer": peer, "transport": transport, "protocol": "3.1.1",
                   "mqtt_client_id": mqtt_client_id, "username": username or "",
                   "password": connect.payload.password}
        if variable.reserved_flag:
            await self._refuse(writer, "reserved_flag", who, "CONNECT reserved flag set [MQTT-3.1.2-3]",
                               attempt)
            return
        if variable.will_flag:
            await self._refuse(writer, "will_not_supported", who,
                               "will messages are not supported (spec §1)", attempt)
            return
        if not variable.username_flag or not variable.password_flag or username is None:
            await self._refuse(writer, "missing_credentials", who,
                               "mqttUsername and mqttPassword are required", attempt)
            return

        missing = None
        try:
            # A device in the verifier's short cache is verified here, in the loop (no query:
            # hashing only); any other is looked up by the batch loader (one query for all the
            # CONNECTs waiting, on a thread), then verified here too.
            verdict = verifier.authenticate_connect(
                mqtt_client_id, username, connect.payload.password, transport, cached_only=True)
        except verifier.NotCached as not_cached:
            missing = not_cached.args[0]
        try:
            if missing is not None:
                record = await self._loader.load(missing)
                verdict = verifier.authenticate_connect(
                    mqtt_client_id, username, connect.payload.password, transport, record=record)
        except Exception as error:
            logger.error("Registry unavailable while verifying %s: %s", shown(who, MAX_TEXT_CHARS),
                         shown(error, MAX_TEXT_CHARS))
            await self._refuse(writer, "registry_unavailable", who,
                               "registry unavailable (server unavailable)", attempt)
            return
        if not verdict.accepted:
            await self._refuse(writer, verdict.code, who, verdict.reason, attempt)
            return

        parsed, record = verdict.parsed, verdict.record
        conn = DeviceConnection(
            product_id=record.product_id,
            device_id=record.device_id,
            device_pk=record.pk,
            client_id=parsed.client_id,
            exclusive=parsed.exclusive,
            transport=transport,
            secret_rotated_at=record.secret_rotated_at,
            session_id=f"{record.product_id}&{record.device_id}#{next(self._ids)}",
            peer=peer,
        )
        async with self._admission:
            previous = self.live.get(conn.key)
            holder = None
            if previous is not None and previous.closing_reason is None:
                holder = verifier.Holder(previous.client_id, previous.exclusive)
            admitted = verifier.admit(verdict, holder)
            if not admitted.accepted:
                await self._refuse(writer, admitted.code, who, admitted.reason, attempt)
                return
            self.live[conn.key] = conn
        await self._run_session(conn, previous, connect, reader, writer, who)

    async def _run_session(self, conn: DeviceConnection, previous: DeviceConnection | None,
                           connect, reader, writer, who: str) -> None:
        """From the accepted CONNECT to the end of the connection; always leaves ``live`` right."""
        accepted = False
        try:
            if previous is not None:
                await previous.close(f"replaced by a newer connection (clientId {shown(conn.client_id)!r})",
                                     "taken_over", (conn.peer, conn.client_id))
            session = PortalSession()
            session.client_id = conn.session_id
            session.clean_session = True
            session.username = connect.payload.username
            session.remote_address, session.remote_port = writer.get_peer_info() or (None, None)
            session.ssl_object = writer.get_ssl_info()
            keep_alive = connect.variable_header.keep_alive
            session.keep_alive = (keep_alive + (keep_alive + 1) // 2) if keep_alive > 0 else 0
            session.attributes[SESSION_KEY] = conn
            conn.trace_id = self._traced.get(conn.device_pk)
            self._note_subscriptions(conn, None)  # a new connection starts without any
            handler = self._handler_class(self.plugins_manager, loop=self._loop)
            conn.handler = handler
            handler.attach(session, reader, writer)
            self._sessions[conn.session_id] = (session, handler)
            session.transitions.connect()
            await handler.mqtt_connack_authorize(True)
            logger.info("Accepted %s as %s%s", shown(who, MAX_TEXT_CHARS), conn.name,
                        " (exclusive)" if conn.exclusive else "")
            self._status(conn, online=True)
            connection_log.record(
                ConnectionKind.CONNECTED, broker=ConnectionBroker.EMBEDDED, code="accepted",
                connack=0, peer=conn.peer, transport=conn.transport, protocol="3.1.1",
                mqtt_client_id=connect.payload.client_id, product_id=conn.product_id,
                device_id=conn.device_id,
            )
            accepted = True
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_CONNECTED, client_id=conn.session_id, client_session=session
            )
            await handler.start()
            if conn.closing_reason is not None:  # replaced or disabled while starting
                await handler.close_connection()
            await self._client_message_loop(session, handler)
        finally:
            await self._cleanup_session(conn.session_id)
            if self.live.get(conn.key) is conn:
                del self.live[conn.key]
                self._status(conn, online=False)
                self._note_subscriptions(conn, None)
            if accepted:
                self._log_end(conn)
            logger.info("%s (clientId %r) disconnected%s", conn.name, shown(conn.client_id),
                        shown(f": {conn.closing_reason}" if conn.closing_reason else "", MAX_TEXT_CHARS))

    @staticmethod
    def _log_end(conn: DeviceConnection) -> None:
        code = conn.closing_code or ("client_disconnect" if conn.saw_disconnect else "connection_lost")
        taker_peer, taker_client_id = conn.taker or ("", "")
        connection_log.record(
            ConnectionKind.DISCONNECTED, broker=ConnectionBroker.EMBEDDED, code=code,
            peer=conn.peer, transport=conn.transport, protocol="3.1.1",
            mqtt_client_id=conn.client_id, product_id=conn.product_id, device_id=conn.device_id,
            session_seconds=time.monotonic() - conn.connected_at,
            taker_peer=taker_peer, taker_client_id=taker_client_id,
        )

    # -- the protocol profile around amqtt's message loop -----------------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        return await super().add_subscription((topic_filter, min(qos, QOS_1)), session)

    async def retain_message(self, source_session, topic_name, data, qos=None) -> None:
        """Retained messages are not supported (spec §1): nothing is ever stored."""
        return None

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        # Unlike amqtt, no topic plugin answering must mean "refused", never "allowed".
        results = await self.plugins_manager.map_plugin_topic(session=session, topic=topic, action=action)
        return bool(results) and all(result is True for result in results.values())


def broker_config(host: str, port: int, tls_port: int | None = None,
                  certfile: str | None = None, keyfile: str | None = None) -> tuple[dict, dict]:
    """amqtt configuration and the listener → transport map for our listeners."""
    listeners = {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}}
    transports = {"default": "tcp"}
    if tls_port:
        listeners["tls"] = {
            "type": "tcp", "bind": f"{host}:{tls_port}", "ssl": True,
            "certfile": certfile, "keyfile": keyfile,
        }
        transports["tls"] = "tls"
    return {"listeners": listeners}, transports


def tune_gc() -> None:
    """Set the cyclic garbage collector for a broker holding thousands of connections.

    Every connection is a few hundred objects (amqtt's session, handler, queues, tasks), and
    Python's default thresholds made the collector go through all of them again and again: with
    5,000 devices connected, a reconnect storm of 2,000 paid twelve full collections of up to
    0.7 s each (3.5 s of the broker's single core; profiled with gc.callbacks). What start-up
    made (Django, amqtt, the modules) is frozen out of the collections for good, and the
    youngest generation is collected every GC_THRESHOLDS[0] allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(host: str, port: int, tls_port: int | None = None, certfile: str | None = None,
                keyfile: str | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the broker until ``stop`` is set (or forever)."""
    config, transports = broker_config(host, port, tls_port, certfile, keyfile)
    broker = PortalBroker(config, transports)
    await broker.start()
    tune_gc()
    logger.info("MQTT broker listening on %s:%s (TCP, securemode=3)%s", host, port,
                f" and {host}:{tls_port} (TLS, securemode=2)" if tls_port else "")
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await broker.shutdown()
