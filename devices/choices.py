"""Every value the portal defines, once: permissions, statuses, sign methods, check outcomes
(with the words and the hint a person reads), refusal codes (with the CONNACK they are answered
with), batch sources. Every other module imports them from here; NetBox's ``dcim/choices.py`` is
the model (value, label and colour or hint together).

The signing scheme's own constants (the sign methods' hash functions, the securemodes, the id
rules) stay in :mod:`devices.signing`, which imports no Django; what the portal chooses on top of
them (the default sign method, the order a person is offered them in) is here.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils.translation import gettext_lazy as _

from . import signing

# -- permissions ----------------------------------------------------------------------------------


class Permission:
    """Permission names as ``user.has_perm`` takes them."""

    VIEW_DEVICE = "devices.view_device"
    CHANGE_DEVICE = "devices.change_device"
    # Secrets, and the passwords derived from them (Device.Meta.permissions declares it).
    VIEW_SECRET = "devices.view_device_secret"
    VIEW_SECRET_CODENAME = "view_device_secret"
    # A connection check connects as the device.
    RUN_CHECK = "devices.add_connectioncheck"
    # Message trace and send to device: payloads can be private (Device.Meta.permissions).
    TRACE = "devices.trace_device"
    TRACE_CODENAME = "trace_device"


def may_rotate_secret(user) -> bool:
    """Rotating a secret changes the device and shows nothing, but it is a decision about the
    device's credentials: it needs both permissions, in the console and the admin alike."""
    return user.has_perm(Permission.CHANGE_DEVICE) and user.has_perm(Permission.VIEW_SECRET)


# -- devices --------------------------------------------------------------------------------------


class DeviceStatus(models.TextChoices):
    INACTIVE = "inactive", _("Inactive")
    ONLINE = "online", _("Online")
    OFFLINE = "offline", _("Offline")


# The admin's badge colours (the console's are the CSS classes badge-<status>).
DEVICE_STATUS_COLOURS = {
    DeviceStatus.ONLINE: "#1e7e34",
    DeviceStatus.OFFLINE: "#6c757d",
    DeviceStatus.INACTIVE: "#b8860b",
}


class BatchSource(models.TextChoices):
    GENERATED = "generated", _("generated from a prefix")
    CSV = "csv", _("uploaded CSV")


# -- connection parameters ------------------------------------------------------------------------


# What the portal renders unless asked otherwise. A device that leaves signmethod out is verified
# with signing.SIGN_METHOD_WHEN_ABSENT (hmacmd5, the spec's default), which is another matter.
DEFAULT_SIGN_METHOD = "hmacsha256"
# The order the console offers them in: the strongest first.
SIGN_METHODS_OFFERED = ("hmacsha256", "hmacsha1", "hmacmd5")
assert set(SIGN_METHODS_OFFERED) == set(signing.SIGN_METHODS)

# -- refusals of a CONNECT ------------------------------------------------------------------------

# MQTT 3.1.1 CONNACK return codes (§3.2.2.3).
CONNACK_ACCEPTED = 0x00
CONNACK_UNACCEPTABLE_PROTOCOL = 0x01
CONNACK_IDENTIFIER_REJECTED = 0x02
CONNACK_SERVER_UNAVAILABLE = 0x03
CONNACK_BAD_USERNAME_OR_PASSWORD = 0x04
CONNACK_NOT_AUTHORIZED = 0x05

# MQTT 5.0 CONNACK reason codes (§3.2.2.2) for the same refusals.
REASON_UNSUPPORTED_PROTOCOL = 0x84
REASON_CLIENT_ID_NOT_VALID = 0x85
REASON_BAD_USERNAME_OR_PASSWORD = 0x86
REASON_NOT_AUTHORIZED = 0x87
REASON_SERVER_UNAVAILABLE = 0x88


@dataclass(frozen=True)
class Refusal:
    """A stable refusal code and how a broker answers it: the MQTT 3.1.1 CONNACK return code
    and the MQTT 5.0 reason code."""

    code: str
    connack: int
    reason_code: int


_IDENTIFIER = (CONNACK_IDENTIFIER_REJECTED, REASON_CLIENT_ID_NOT_VALID)
_CREDENTIALS = (CONNACK_BAD_USERNAME_OR_PASSWORD, REASON_BAD_USERNAME_OR_PASSWORD)
_NOT_AUTHORIZED = (CONNACK_NOT_AUTHORIZED, REASON_NOT_AUTHORIZED)

REFUSALS = {
    refusal.code: refusal
    for refusal in (
        # The mqttClientId cannot be read (signing.parse_connect).
        Refusal("malformed_client_id", *_IDENTIFIER),
        Refusal("client_id_too_long", *_IDENTIFIER),
        Refusal("missing_securemode", *_IDENTIFIER),
        Refusal("bad_securemode", *_IDENTIFIER),
        Refusal("unsupported_signmethod", *_IDENTIFIER),
        Refusal("bad_timestamp", *_IDENTIFIER),
        Refusal("bad_exclusive", *_IDENTIFIER),
        # Who the device is, and whether it proved it.
        Refusal("missing_credentials", *_CREDENTIALS),
        Refusal("malformed_username", *_CREDENTIALS),
        Refusal("unknown_device", *_CREDENTIALS),
        Refusal("wrong_device", *_CREDENTIALS),
        Refusal("bad_signature", *_CREDENTIALS),
        # A correctly signed device that a rule turns away.
        Refusal("securemode_mismatch", *_NOT_AUTHORIZED),
        Refusal("missing_timestamp", *_NOT_AUTHORIZED),
        Refusal("timestamp_out_of_window", *_NOT_AUTHORIZED),
        Refusal("device_disabled", *_NOT_AUTHORIZED),
        Refusal("exclusive_connection", *_NOT_AUTHORIZED),
        # The protocol profile (spec §1) and the broker itself.
        Refusal("will_not_supported", *_NOT_AUTHORIZED),
        Refusal("reserved_flag", *_NOT_AUTHORIZED),
        Refusal("unsupported_protocol", CONNACK_UNACCEPTABLE_PROTOCOL, REASON_UNSUPPORTED_PROTOCOL),
        Refusal("registry_unavailable", CONNACK_SERVER_UNAVAILABLE, REASON_SERVER_UNAVAILABLE),
    )
}


def refusal(code: str) -> Refusal:
    """The refusal for ``code``; an unknown code is refused as "not authorized"."""
    return REFUSALS.get(code) or Refusal(code, *_NOT_AUTHORIZED)


# -- topics ---------------------------------------------------------------------------------------

TRANSPORTS = ("tcp", "tls")
TOPIC_ACTIONS = ("publish", "subscribe")

# -- connection checks ----------------------------------------------------------------------------


class CheckStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


# The console's badge class for a check's status (green succeeded, red failed, amber otherwise).
CHECK_STATUS_BADGES = {CheckStatus.SUCCEEDED: "badge-online", CheckStatus.FAILED: "badge-disabled"}

# The MQTT versions a check can speak (devices.connection_check maps them to paho's constants).
CHECK_PROTOCOLS = ("3.1", "3.1.1", "5.0")
DEFAULT_CHECK_PROTOCOL = "3.1.1"


class Outcome:
    """Stable outcome codes. Only ``ACCEPTED`` means the parameters work."""

    ACCEPTED = "accepted"
    REFUSED_PROTOCOL = "refused_protocol_version"
    REFUSED_IDENTIFIER = "refused_identifier_rejected"
    REFUSED_SERVER_UNAVAILABLE = "refused_server_unavailable"
    REFUSED_BAD_CREDENTIALS = "refused_bad_credentials"
    REFUSED_NOT_AUTHORIZED = "refused_not_authorized"
    REFUSED_OTHER = "refused_other"
    TCP_REFUSED = "tcp_refused"
    TCP_TIMEOUT = "tcp_timeout"
    NAME_NOT_RESOLVED = "name_not_resolved"
    TLS_UNTRUSTED = "tls_untrusted"
    TLS_HOSTNAME_MISMATCH = "tls_hostname_mismatch"
    TLS_FAILED = "tls_failed"
    NO_CONNACK = "no_connack"
    CLOSED_BEFORE_CONNACK = "closed_before_connack"
    NO_PUBACK = "no_puback"
    PUBLISH_REFUSED = "publish_refused"
    CLOSED_BEFORE_PUBACK = "closed_before_puback"
    NETWORK_ERROR = "network_error"
    # Set by the background work, not by run_connection_check:
    INTERRUPTED = "interrupted"
    INVALID_OPTIONS = "invalid_options"
    DEVICE_GONE = "device_gone"
    INTERNAL_ERROR = "internal_error"


# code -> (what happened, what to do about it)
OUTCOME_TEXT = {
    Outcome.ACCEPTED: (
        _("Connected and published: the broker accepted these parameters."),
        _("The device can use exactly these parameters."),
    ),
    Outcome.REFUSED_PROTOCOL: (
        _("Refused by the broker: protocol version not supported."),
        _("Choose another MQTT version (3.1.1 is the default the broker supports)."),
    ),
    Outcome.REFUSED_IDENTIFIER: (
        _("Refused by the broker: client identifier rejected."),
        _("Check the clientId and its extension parameters; if the device is connected in "
          "exclusive mode, another connection cannot take its place until it disconnects."),
    ),
    Outcome.REFUSED_SERVER_UNAVAILABLE: (
        _("Refused by the broker: server unavailable."),
        _("The broker is up but cannot serve connections now; look at the broker's log and "
          "try again later."),
    ),
    Outcome.REFUSED_BAD_CREDENTIALS: (
        _("Refused by the broker: bad username or password."),
        _("The password does not match the device secret: if the secret was rotated, give the "
          "device its new secret; check signmethod and the signed clientId and timestamp."),
    ),
    Outcome.REFUSED_NOT_AUTHORIZED: (
        _("Refused by the broker: not authorized."),
        _("The broker does not let this device in: check that the device is enabled, that "
          "securemode matches the port, and that the device is not connected in exclusive mode."),
    ),
    Outcome.REFUSED_OTHER: (
        _("Refused by the broker."),
        _("Look up the CONNACK code in the broker's documentation and its log."),
    ),
    Outcome.TCP_REFUSED: (
        _("TCP connection refused: nothing listens on that host and port."),
        _("Check the broker host and port, and that the broker is running."),
    ),
    Outcome.TCP_TIMEOUT: (
        _("TCP connection timed out."),
        _("The host does not answer on that port: check the address, firewalls and routing."),
    ),
    Outcome.NAME_NOT_RESOLVED: (
        _("The broker's host name could not be resolved."),
        _("Check the spelling of the host name (PORTAL_MQTT_HOST) and the DNS settings."),
    ),
    Outcome.TLS_UNTRUSTED: (
        _("TLS failure: the broker's certificate is not trusted."),
        _("The CA certificate does not match the broker's certificate: use the deployment's CA "
          "certificate (securemode=2), or check which certificate the broker presents."),
    ),
    Outcome.TLS_HOSTNAME_MISMATCH: (
        _("TLS failure: the certificate does not match the host name."),
        _("Connect with a host name listed in the broker's certificate, or issue a certificate "
          "for this host name."),
    ),
    Outcome.TLS_FAILED: (
        _("TLS failure."),
        _("The TLS handshake failed: check that this port speaks TLS (securemode=2) and the "
          "TLS versions and ciphers both sides allow."),
    ),
    Outcome.NO_CONNACK: (
        _("No CONNACK within the timeout."),
        _("Something accepted the TCP connection but did not answer as an MQTT broker: check "
          "that the port belongs to the broker, and whether it is overloaded."),
    ),
    Outcome.CLOSED_BEFORE_CONNACK: (
        _("The broker closed the connection without a CONNACK."),
        _("The broker dropped the CONNECT: look at the broker's log for the reason (e.g. a "
          "securemode that does not match the port, or a plain-TCP client on a TLS port)."),
    ),
    Outcome.NO_PUBACK: (
        _("No PUBACK within the timeout."),
        _("The connection was accepted but the test message was not acknowledged: look at "
          "the broker's log and its topic permissions."),
    ),
    Outcome.PUBLISH_REFUSED: (
        _("The broker refused the test message."),
        _("The device may not publish to its own topic space: check the broker's topic rules."),
    ),
    Outcome.CLOSED_BEFORE_PUBACK: (
        _("The broker closed the connection before acknowledging the test message."),
        _("Another connection of the same device may have replaced this one, or the broker "
          "refused the message: look at the broker's log."),
    ),
    Outcome.NETWORK_ERROR: (
        _("Network error."),
        _("The connection failed for a reason shown in the details; check the network path "
          "to the broker."),
    ),
    Outcome.INTERRUPTED: (
        _("Interrupted: the worker stopped while running this check."),
        _("Run the check again; if it keeps happening, look at the worker's log."),
    ),
    Outcome.INVALID_OPTIONS: (
        _("The check's options are not valid for this deployment."),
        _("Choose other options (for example securemode=3 when there is no TLS listener)."),
    ),
    Outcome.DEVICE_GONE: (
        _("The device was deleted before the check ran."),
        _("Nothing to do."),
    ),
    Outcome.INTERNAL_ERROR: (
        _("The check could not run because of an internal error."),
        _("Look at the worker's log."),
    ),
}


def outcome_text(code: str) -> tuple[str, str]:
    """(message, hint) for an outcome code, translated into the active language."""
    message, hint = OUTCOME_TEXT.get(code, OUTCOME_TEXT[Outcome.INTERNAL_ERROR])
    return str(message), str(hint)



# -- the connection log ---------------------------------------------------------------------------


class ConnectionKind(models.TextChoices):
    CONNECTED = "connected", _("Connected")
    REFUSED = "refused", _("Refused")
    DISCONNECTED = "disconnected", _("Disconnected")


class ConnectionBroker(models.TextChoices):
    EMBEDDED = "embedded", _("embedded broker")
    EMQX = "emqx", _("EMQX")


# The code of an accepted CONNECT (a warning, if any, is in the event's findings).
ACCEPTED = "accepted"

# code -> (what happened, what to change). Every refusal code in REFUSALS has its words here
# (tests/test_connection_log.py checks it), beside the codes they explain.
REFUSAL_TEXT = {
    "malformed_client_id": (
        _("The mqttClientId could not be read."),
        _("Send clientId|securemode=3,signmethod=hmacsha256,timestamp=...| : the clientId, "
          "then key=value pairs separated by commas, between two '|'."),
    ),
    "client_id_too_long": (
        _("The clientId before '|' is too long."),
        _("Use a clientId of at most 64 characters (the device's deviceId is a good choice)."),
    ),
    "missing_securemode": (
        _("The mqttClientId has no securemode."),
        _("Add securemode=2 (TLS port) or securemode=3 (plain TCP port) to the extension "
          "parameters."),
    ),
    "bad_securemode": (
        _("The securemode is neither 2 nor 3."),
        _("Write securemode=2 on the TLS port, securemode=3 on the plain TCP port."),
    ),
    "unsupported_signmethod": (
        _("The signmethod is not one the platform supports."),
        _("Use signmethod=hmacsha256, hmacsha1 or hmacmd5, and sign with that method."),
    ),
    "bad_timestamp": (
        _("The timestamp is not a number of milliseconds."),
        _("Write the current time in milliseconds since 1970 (digits only), or leave "
          "timestamp out."),
    ),
    "bad_exclusive": (
        _("The exclusive parameter is neither true nor false."),
        _("Write exclusive=true or exclusive=false, or leave it out."),
    ),
    "missing_credentials": (
        _("The CONNECT carried no username or no password."),
        _("Send mqttUsername (deviceId&productId) and mqttPassword (the signature) with every "
          "CONNECT."),
    ),
    "malformed_username": (
        _("The mqttUsername is not deviceId&productId."),
        _("Write the username as deviceId&productId, with exactly one '&'."),
    ),
    "unknown_device": (
        _("No such device in the registry."),
        _("Check the deviceId and productId in mqttUsername, or register the device first."),
    ),
    "wrong_device": (
        _("The username and the clientId name different devices."),
        _("Use the same device in mqttUsername and in what the device signs."),
    ),
    "bad_signature": (
        _("The password is not the signature of this device's secret."),
        _("Sign clientId, deviceId, productId and timestamp (sorted by name) with the device "
          "secret and the signmethod the mqttClientId names; see the findings below."),
    ),
    "securemode_mismatch": (
        _("The securemode does not match the port the device connected to."),
        _("Use securemode=2 on the TLS port and securemode=3 on the plain TCP port."),
    ),
    "missing_timestamp": (
        _("This deployment requires a timestamp, and the mqttClientId has none."),
        _("Add timestamp=<current time in milliseconds> to the extension parameters and sign "
          "it."),
    ),
    "timestamp_out_of_window": (
        _("The timestamp is too far from the broker's clock."),
        _("Set the device's clock (NTP) and send the current time in milliseconds."),
    ),
    "device_disabled": (
        _("The device is disabled in the portal."),
        _("Enable the device on its page; its signature was right."),
    ),
    "exclusive_connection": (
        _("Another connection holds this device in exclusive mode."),
        _("Wait until that connection ends, or disconnect it; only then can a new one take "
          "its place."),
    ),
    "will_not_supported": (
        _("The CONNECT asked for a will message, which the platform does not support."),
        _("Connect without a will (last will and testament)."),
    ),
    "reserved_flag": (
        _("The CONNECT set the reserved flag, which MQTT forbids."),
        _("Use an MQTT client library that follows MQTT 3.1.1."),
    ),
    "unsupported_protocol": (
        _("This MQTT version is not spoken by the broker."),
        _("Connect with MQTT 3.1.1 (the embedded broker speaks only 3.1.1)."),
    ),
    "registry_unavailable": (
        _("The broker could not reach the registry."),
        _("Nothing to change on the device: try again later; an operator should look at the "
          "broker's log."),
    ),
    "not_a_connect": (
        _("The first packet was not a valid CONNECT."),
        _("Speak MQTT 3.1.1 from the first byte: the first packet must be a CONNECT."),
    ),
}

# Why a session ended: code -> (what happened, what to change or None).
SESSION_END_TEXT = {
    "client_disconnect": (_("The device disconnected."), None),
    "keepalive_timeout": (
        _("The device sent nothing within 1.5 × its keep-alive."),
        _("Send PINGREQ within the keep-alive interval, or choose a longer keep-alive."),
    ),
    "taken_over": (
        _("A newer connection of the same device took its place."),
        _("Only one connection per device lives at a time: give each running copy of the "
          "device its own deviceId, or stop the other one."),
    ),
    "discarded": (
        _("A newer connection of the same device discarded this session."),
        _("Only one connection per device lives at a time: stop the other connection."),
    ),
    "kicked_disabled": (
        _("Disconnected: the device was disabled."),
        _("Enable the device on its page."),
    ),
    "kicked_secret_rotated": (
        _("Disconnected: the device's secret was rotated."),
        _("Give the device its new secret."),
    ),
    "kicked_deleted": (_("Disconnected: the device was deleted."), None),
    "kicked": (_("Disconnected by the broker's operator."), None),
    "qos_not_supported": (
        _("Disconnected: the device published at QoS 2."),
        _("Publish at QoS 0 or 1."),
    ),
    "retain_not_supported": (
        _("Disconnected: the device published a retained message."),
        _("Publish without the retain flag."),
    ),
    "connection_lost": (
        _("The connection was lost without a DISCONNECT."),
        _("Check the device's network; send DISCONNECT before closing on purpose."),
    ),
    "broker_shutdown": (_("The broker stopped."), None),
    "unknown": (_("The session ended for a reason the broker did not name."), None),
}

CONNECTED_TEXT = (_("Connected."), None)
REFUSED_OTHER_TEXT = (_("Refused by the broker."), None)


def connection_event_text(kind: str, code: str) -> tuple[str, str | None]:
    """(what happened, what to change or None) for an event, in the active language."""
    if kind == ConnectionKind.CONNECTED:
        reason, hint = CONNECTED_TEXT
    elif kind == ConnectionKind.DISCONNECTED:
        reason, hint = SESSION_END_TEXT.get(code, SESSION_END_TEXT["unknown"])
    else:
        reason, hint = REFUSAL_TEXT.get(code, REFUSED_OTHER_TEXT)
    return str(reason), (str(hint) if hint is not None else None)


# -- message trace and send to device (devices.message_trace) -----------------------------------


class TraceDirection(models.TextChoices):
    FROM_DEVICE = "from_device", _("from the device")
    TO_DEVICE = "to_device", _("to the device")


class SendResult(models.TextChoices):
    """What became of a message the portal sent to a device (INTERFACES.md, POST .../messages)."""

    ACKNOWLEDGED = "acknowledged", _("Delivered and acknowledged by the device (PUBACK).")
    SENT = "sent", _("Sent to the device (QoS 0: no acknowledgement).")
    NOT_CONNECTED = "not_connected", _("The device is not connected.")
    NO_SUBSCRIPTION = "no_subscription", _("The device has no subscription matching this topic.")


class PayloadEncoding:
    """How a traced payload is shown (INTERFACES.md, GET /api/v1/traces/{id}): text when it is
    UTF-8, else hexadecimal."""

    UTF8 = "utf8"
    HEX = "hex"


PAYLOAD_ENCODINGS = (PayloadEncoding.UTF8, PayloadEncoding.HEX)

# The QoS levels a person may send to a device with (QoS 2 is not supported).
SEND_QOS_LEVELS = (0, 1)
