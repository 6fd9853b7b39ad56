"""What the EMQX hooks tell the connection log (``devices.connection_log``).

Kept beside the hooks rather than in them, so that ``broker/hooks.py`` only calls two functions:
:func:`log_auth_refusal` from ``/mqtt/auth`` and :func:`log_session_event` from ``/mqtt/events``.
Both only append to the log's in-process buffer; neither can fail a hook call.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from devices import connection_log
from devices.choices import ConnectionBroker, ConnectionKind

logger = logging.getLogger("broker.hooks")

# EMQX's disconnect reasons → the log's codes (devices.choices.SESSION_END_TEXT).
EMQX_REASONS = {
    "normal": "client_disconnect",
    "keepalive_timeout": "keepalive_timeout",
    "takenover": "taken_over",
    "takeovered": "taken_over",
    "discarded": "discarded",
    "kicked": "kicked",
    "sock_closed": "connection_lost",
    "tcp_closed": "connection_lost",
    "ssl_closed": "connection_lost",
    "closed": "connection_lost",
    "shutdown": "broker_shutdown",
}

_PROTO_VERSIONS = {3: "3.1", 4: "3.1.1", 5: "5.0", "3": "3.1", "4": "3.1.1", "5": "5.0"}


def disconnect_code(reason) -> str:
    """The log's code for EMQX's ``reason``; anything that is not a known string is "unknown"."""
    return EMQX_REASONS.get(reason, "unknown") if isinstance(reason, str) else "unknown"


def _text(body, name) -> str:
    value = body.get(name)
    return value if isinstance(value, str) else ""


def _millis(body, name):
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**14:
        return None
    return value


def log_auth_refusal(body: dict, verdict, transport: str | None) -> None:
    """A CONNECT that ``/mqtt/auth`` denied (the password only reaches the buffer)."""
    try:
        connection_log.record(
            ConnectionKind.REFUSED, broker=ConnectionBroker.EMQX, code=verdict.code,
            connack=verdict.connack, peer=_text(body, "peerhost"), transport=transport or "",
            mqtt_client_id=_text(body, "clientid"), username=_text(body, "username"),
            password=_text(body, "password"),
        )
    except Exception as error:  # noqa: BLE001 (the log must never fail authentication)
        logger.error("Could not note a refusal in the connection log: %s", type(error).__name__)


def log_session_event(body: dict, event: str, session) -> None:
    """``client.connected`` / ``client.disconnected`` from the webhook, of a session the portal
    authenticated (``BrokerSession``). With ``clientid_override`` EMQX's client id is the
    username, so the device's own mqttClientId and the session's start come from the record
    (EMQX's client.disconnected event carries no ``connected_at``)."""
    try:
        connected = event == "client.connected"
        at_ms = _millis(body, "connected_at" if connected else "disconnected_at")
        at = datetime.fromtimestamp(at_ms / 1000, tz=UTC) if at_ms is not None else None
        seconds = None
        if not connected and session.connected_at is not None:
            ended = at or datetime.now(tz=UTC)
            if ended >= session.connected_at:
                seconds = (ended - session.connected_at).total_seconds()
        connection_log.record(
            ConnectionKind.CONNECTED if connected else ConnectionKind.DISCONNECTED,
            broker=ConnectionBroker.EMQX,
            code="accepted" if connected else disconnect_code(body.get("reason")),
            connack=0 if connected else None, peer=_text(body, "peername"),
            protocol=_PROTO_VERSIONS.get(body.get("proto_ver"), ""),
            mqtt_client_id=session.client_id, username=_text(body, "username"),
            session_seconds=seconds, at=at,
        )
    except Exception as error:  # noqa: BLE001 (the log must never fail the webhook)
        logger.error("Could not note a session event in the connection log: %s", type(error).__name__)


def log_takeovers(session, at_ms) -> None:
    """The connections ``session`` replaced (one per device): each ended, taken over by it.
    Logged when the newcomer's client.connected arrives; the old one's own "takenover" event
    that may follow finds no session left and is ignored."""
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC) if at_ms is not None else None
    for old in getattr(session, "replaced", []):
        try:
            seconds = None
            if old.connected_at is not None and at is not None and at >= old.connected_at:
                seconds = (at - old.connected_at).total_seconds()
            connection_log.record(
                ConnectionKind.DISCONNECTED, broker=ConnectionBroker.EMQX, code="taken_over",
                peer=old.peername, mqtt_client_id=old.client_id, username=old.username,
                session_seconds=seconds, taker_peer=session.peername,
                taker_client_id=session.client_id.partition("|")[0], at=at,
            )
        except Exception as error:  # noqa: BLE001 (the log must never fail the webhook)
            logger.error("Could not note a takeover in the connection log: %s",
                         type(error).__name__)

