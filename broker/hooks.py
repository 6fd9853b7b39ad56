"""HTTP hooks with which an EMQX 5 cluster authenticates and authorizes devices (README, "The broker").

``POST /mqtt/auth`` (HTTP authentication), ``POST /mqtt/acl`` (HTTP authorization) and
``POST /mqtt/events`` (a webhook for client.connected / client.disconnected). They decide with
the same verifier as the embedded broker (``broker.verifier``), so both brokers follow one set of
rules. Every call needs ``Authorization: Bearer $PORTAL_BROKER_HOOK_TOKEN``; without that setting
every call is refused, so that a forgotten token never means an open door.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from devices import signing
from devices.api import error_response
from devices.logsafe import MAX_TEXT_CHARS, shown

from . import connection_events, verifier

logger = logging.getLogger("broker.hooks")

# EMQX reasons for a disconnect that a newer connection of the same client caused: the device is
# still online through that newer connection.
_REPLACED_REASONS = {"takenover", "takeovered", "discarded"}


class HookInputError(ValueError):
    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


def _token_problem(request):
    """A refusal response when the bearer token is missing or wrong, else None."""
    expected = settings.BROKER_HOOK_TOKEN
    if not expected:
        return error_response(
            403, "hooks_disabled",
            "PORTAL_BROKER_HOOK_TOKEN is not set on the portal, so every hook call is refused.",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return error_response(401, "missing_token", "Send Authorization: Bearer <PORTAL_BROKER_HOOK_TOKEN>.")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return error_response(401, "wrong_token", "The bearer token is not PORTAL_BROKER_HOOK_TOKEN.")
    return None


def broker_hook(view):
    """POST only, CSRF-exempt (a machine calls), token checked, JSON object body parsed."""

    @csrf_exempt
    @require_POST
    def wrapper(request):
        refusal = _token_problem(request)
        if refusal is not None:
            return refusal
        try:
            raw = request.body
        except RequestDataTooBig:
            return error_response(
                413, "body_too_large",
                f"The body must be at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            )
        try:
            body = json.loads(raw or b"")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
            return error_response(400, "malformed_json", "The body must be a JSON object.")
        if not isinstance(body, dict):
            return error_response(400, "malformed_json", "The body must be a JSON object.")
        try:
            return view(request, body)
        except HookInputError as error:
            return error_response(400, "invalid_field", error.message, error.field)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


def _text(body, name, required=True):
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        needed = "is required and must be" if required else "must be"
        raise HookInputError(name, f"{name} {needed} a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry a lone surrogate (\ud800); no text has one
        raise HookInputError(name, f"{name} must be valid Unicode text.") from None
    return value


def _choice(body, name, choices, required=True):
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or value not in choices:  # a list or object is no choice
        raise HookInputError(name, f"{name} must be one of {', '.join(choices)}.")
    return value


def _qos(body):
    value = body.get("qos", 0)
    # EMQX placeholders arrive as strings: exactly "0", "1" or "2" (str.isdigit() would also
    # take "²", which int() refuses, and int() would read "01" or Arabic-Indic "١").
    if isinstance(value, str) and value in ("0", "1", "2"):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1, 2):
        raise HookInputError("qos", "qos must be 0, 1 or 2.")
    return value


def _retain(body):
    value = body.get("retain", False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise HookInputError("retain", "retain must be true or false.")
    return value


@broker_hook
def mqtt_auth(request, body):
    """EMQX HTTP authentication: allow or deny a CONNECT (200 either way).

    ``clientid`` is the device's own mqttClientId (``${client_attrs.mqtt_clientid}`` in the
    README's configuration); ``broker_clientid``, when sent, is EMQX's client id. An accepted
    CONNECT is recorded (``BrokerSession``): only recorded sessions get rights at ``/mqtt/acl``,
    and an exclusive one refuses newcomers of its device (spec §4) until it leaves."""
    client_id = _text(body, "clientid")
    username = _text(body, "username")
    password = _text(body, "password")
    peerhost = _text(body, "peerhost", required=False)
    broker_client_id = _text(body, "broker_clientid", required=False)
    transport = _choice(body, "transport", verifier.TRANSPORTS, required=False)
    verdict = verifier.verify_connect(client_id, username, password, transport)
    if verdict.accepted:
        verdict = verifier.admit(verdict, _holder(verdict.record))
    if not verdict.accepted:
        connection_events.log_auth_refusal(body, verdict, transport)
        logger.warning(
            "Hook refused CONNECT from %s over %s (mqttClientId %r, username %r): %s: %s",
            shown(peerhost or "?"), transport or "an unknown transport", shown(client_id),
            shown(username), verdict.code, shown(verdict.reason, MAX_TEXT_CHARS),
        )
        return JsonResponse({"result": "deny", "is_superuser": False})
    from devices.models import BrokerSession

    with _record_lock:
        BrokerSession.objects.record_authenticated(
            verdict.record.pk, username, client_id, peerhost, verdict.parsed.exclusive,
            broker_client_id,
        )
    return JsonResponse({"result": "allow", "is_superuser": False})


# One writer at a time per process: the threads of a gunicorn worker queue here for the record's
# INSERT rather than in SQLite's busy handler, whose growing sleeps (1, 2, 5 … 100 ms) made a
# storm of accepted CONNECTs a convoy (p99 0.5–0.9 s at 8 connections). Other databases lose
# nothing by it (a short INSERT).
_record_lock = threading.Lock()


def _holder(record):
    """The connection that holds the device on EMQX now (an exclusive one first), from the
    portal's record; a record EMQX's REST API says is gone (its events were lost) is dropped."""
    from devices import emqx, hot_queries
    from devices.models import BrokerSession

    # By username, which names the device exactly (deviceId&productId: parse_username takes
    # nothing else, and a deleted device's sessions go with it): the (username, connected_at)
    # index finds the connected ones at once. A session signed before the secret's rotation is
    # being kicked and holds nothing.
    sessions = hot_queries.connected_sessions(
        f"{record.device_id}&{record.product_id}", record.secret_rotated_at
    )
    for pk, client_id, broker_client_id, username, exclusive in sessions:
        if exclusive and emqx.enabled():
            broker_id = broker_client_id or username
            if emqx.EmqxApi().is_connected(broker_id) is False:
                logger.warning("EMQX no longer has %r (its disconnect never reached the portal); "
                               "forgetting it", broker_id)
                BrokerSession.objects.filter(pk=pk).delete()
                continue
        return verifier.Holder(client_id, exclusive)
    return None


@broker_hook
def mqtt_acl(request, body):
    """EMQX HTTP authorization: a publish or subscribe inside the device's own space, only for a
    session the portal authenticated (``/mqtt/auth``) and has not seen end."""
    client_id = _text(body, "clientid")
    username = _text(body, "username")
    peerhost = _text(body, "peerhost", required=False)
    action = _choice(body, "action", verifier.ACTIONS)
    topic = _text(body, "topic")
    qos = _qos(body)
    retain = _retain(body)
    reason = None
    try:
        device_id, product_id = signing.parse_username(username)
    except signing.SigningError as error:
        device_id = product_id = None
        reason = error.message
    if reason is None:
        record = verifier.lookup_device(product_id, device_id)
        if record is None:
            reason = "unknown device"
        elif not record.enabled:
            reason = "the device is disabled"
        elif not _authenticated_session(record, username, client_id, peerhost):
            reason = "no session of this client the portal authenticated is connected"
        else:
            verdict = verifier.authorize_topic(product_id, device_id, action, topic, qos, retain)
            reason = None if verdict.allowed else verdict.reason
    if reason is not None:
        logger.warning("Hook refused %s %r for clientid %r, username %r: %s",
                       action, shown(topic), shown(client_id), shown(username),
                       shown(reason, MAX_TEXT_CHARS))
        return JsonResponse({"result": "deny"})
    return JsonResponse({"result": "allow"})


def _authenticated_session(record, username, client_id, peerhost):
    from devices.models import BrokerSession

    sessions = BrokerSession.objects.authorizing(username, client_id, peerhost).filter(
        device_id=record.pk
    )
    if record.secret_rotated_at is not None:  # a session signed with the old secret has none
        sessions = sessions.filter(authenticated_at__gte=record.secret_rotated_at)
    return sessions.exists()


@broker_hook
def mqtt_events(request, body):
    """EMQX webhook: client.connected / client.disconnected keep the device's status and the
    record of its sessions (204). Only a connection the portal authenticated counts: events of
    any other (a listener without the portal's authenticator) change nothing."""
    event = _text(body, "event")
    if event not in ("client.connected", "client.disconnected"):
        return HttpResponse(status=204)  # other events are not ours to track
    username = _text(body, "username")
    reason = _text(body, "reason", required=False)  # EMQX sends a word, e.g. "takenover"
    peername = _text(body, "peername", required=False)
    broker_client_id = _text(body, "clientid", required=False)
    try:
        device_id, product_id = signing.parse_username(username)
    except signing.SigningError:
        return HttpResponse(status=204)  # such a client was never accepted
    from django.db.models import Q

    from devices.models import BrokerSession, Device

    devices = Device.objects.filter(product__product_id=product_id, device_id=device_id)
    connected = event == "client.connected"
    when = _event_time(body, "connected_at" if connected else "disconnected_at")
    if connected:
        session = BrokerSession.objects.mark_connected(username, peername, broker_client_id, when)
    else:
        session = BrokerSession.objects.mark_disconnected(username, peername, when)
    if session is None:
        logger.warning(
            "EMQX reports %s of %r from %s, a connection the portal never authenticated (or "
            "already saw end): ignored. Every EMQX listener must authenticate through /mqtt/auth.",
            event, username, peername or "?",
        )
        return HttpResponse(status=204)
    connection_events.log_session_event(body, event, session)  # only authenticated sessions
    if connected:
        connection_events.log_takeovers(session, body.get("connected_at"))
    if when is not None:
        # EMQX may deliver a reconnect's events out of order (its HTTP action is asynchronous):
        # an event older than the device's last recorded change is history, not news.
        devices = devices.filter(Q(last_online_at__isnull=True) | Q(last_online_at__lte=when))
    if connected:
        devices.mark_online(when)
    elif reason not in _REPLACED_REASONS and not (
        BrokerSession.objects.connected().filter(device_id=session.device_id).exists()
    ):
        devices.mark_offline(when)
    return HttpResponse(status=204)


def _event_time(body, name):
    """EMQX's event time (milliseconds since the epoch) as a datetime, None when absent."""
    from datetime import UTC, datetime

    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**14:
        raise HookInputError(name, f"{name} must be a time in milliseconds since the epoch.")
    return datetime.fromtimestamp(value / 1000, tz=UTC)
