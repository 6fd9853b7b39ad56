"""The platform's MQTT signing scheme: build, parse, sign and verify the three CONNECT fields.

This is the one home of the rules in ``shared/spec/MQTT-ACCESS.md`` §2–3. The console, the JSON
endpoint, the embedded broker, the EMQX hooks and the connection checks all call it; none of them
re-implements a piece of it. It imports nothing from Django or the rest of the project.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import unicodedata
from dataclasses import dataclass, field

SECURE_MODE_TLS = 2
SECURE_MODE_TCP = 3
SECURE_MODES = (SECURE_MODE_TLS, SECURE_MODE_TCP)
TRANSPORT_FOR_SECURE_MODE = {SECURE_MODE_TLS: "tls", SECURE_MODE_TCP: "tcp"}

SIGN_METHODS = {
    "hmacmd5": hashlib.md5,
    "hmacsha1": hashlib.sha1,
    "hmacsha256": hashlib.sha256,
}
# What the verifier assumes when a device leaves signmethod out (spec §2).
SIGN_METHOD_WHEN_ABSENT = "hmacmd5"

ID_MAX_LENGTH = 64
# Milliseconds since 1970 have 13 digits today; 19 is the most a signed 64-bit integer holds.
TIMESTAMP_MAX_DIGITS = 19
CLIENT_ID_MAX_LENGTH = 64
# productId and deviceId: letters, digits and - _ . : @ (spec §2, decision).
ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:@]{1,64}")
ID_ALLOWED_TEXT = "1 to 64 characters of letters, digits and - _ . : @"
CLIENT_ID_FORBIDDEN_TEXT = "| , = & spaces, or control or format characters"
CLIENT_ID_FORBIDDEN_CHARACTERS = "|,=&"
# Unicode categories refused in a clientId (spec §2): controls (Cc) and format characters (Cf:
# U+202E, U+200B, U+FEFF, ...), which make a clientId read differently from what it is; and lone
# surrogates (Cs), which no UTF-8 CONNECT can carry and which cannot be signed.
CLIENT_ID_FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Cs")


class SigningError(ValueError):
    """Input that the scheme cannot accept. ``field`` names the input, ``code`` is stable."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


# -- validation of the parts ---------------------------------------------------------------------


def id_error(value: str) -> str | None:
    """Why ``value`` is not a valid productId/deviceId, or None when it is."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        return f"must be {ID_ALLOWED_TEXT}"
    return None


def forbidden_client_id_character(value: str) -> str | None:
    """The first character of ``value`` that no clientId may hold, or None."""
    for char in value:
        if (
            char in CLIENT_ID_FORBIDDEN_CHARACTERS
            or char.isspace()
            or unicodedata.category(char) in CLIENT_ID_FORBIDDEN_CATEGORIES
        ):
            return char
    return None


def character_shown(char: str) -> str:
    """A character as a person can read it: ``'|'`` when visible, else its code point and name
    (``U+202E RIGHT-TO-LEFT OVERRIDE``), since an invisible one shows nothing."""
    if char.isprintable() and not char.isspace():
        return repr(char)
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def client_id_error(value: str) -> str | None:
    """Why ``value`` is not a valid clientId (the part before the first ``|``), or None."""
    if not isinstance(value, str) or value == "":
        return f"must be 1 to {CLIENT_ID_MAX_LENGTH} characters"
    if len(value) > CLIENT_ID_MAX_LENGTH:
        return f"must be at most {CLIENT_ID_MAX_LENGTH} characters (it has {len(value)})"
    bad = forbidden_client_id_character(value)
    if bad is not None:
        return f"must not contain {CLIENT_ID_FORBIDDEN_TEXT} (found {character_shown(bad)})"
    return None


def normalize_sign_method(value: str) -> str | None:
    """The canonical sign method for ``value`` (case ignored), or None when unsupported."""
    name = value.lower() if isinstance(value, str) else ""
    return name if name in SIGN_METHODS else None


def now_ms() -> int:
    return int(time.time() * 1000)


# -- building -------------------------------------------------------------------------------------


def build_mqtt_client_id(
    client_id: str,
    securemode: int,
    signmethod: str,
    timestamp: int | None = None,
    exclusive: bool = False,
) -> str:
    """``clientId|securemode=..,signmethod=..[,timestamp=..][,exclusive=true]|``."""
    params = [f"securemode={securemode}", f"signmethod={signmethod}"]
    if timestamp is not None:
        params.append(f"timestamp={timestamp}")
    if exclusive:
        params.append("exclusive=true")
    return f"{client_id}|{','.join(params)}|"


def build_username(device_id: str, product_id: str) -> str:
    return f"{device_id}&{product_id}"


def signing_content(
    product_id: str,
    device_id: str,
    client_id: str | None = None,
    timestamp: str | int | None = None,
) -> str:
    """Parameters sorted by name (clientId, deviceId, productId, timestamp), name then value."""
    parts = []
    if client_id is not None:
        parts.append(f"clientId{client_id}")
    parts.append(f"deviceId{device_id}")
    parts.append(f"productId{product_id}")
    if timestamp is not None:
        parts.append(f"timestamp{timestamp}")
    return "".join(parts)


def sign(secret: str, content: str, signmethod: str) -> str:
    """Lowercase hex HMAC of ``content`` keyed by ``secret``."""
    digest = SIGN_METHODS[signmethod]
    return hmac.new(secret.encode("utf-8"), content.encode("utf-8"), digest).hexdigest()


@dataclass(frozen=True)
class ConnectParams:
    """Everything a device needs to connect, as the portal renders it."""

    product_id: str
    device_id: str
    client_id: str
    securemode: int
    signmethod: str
    timestamp: int | None
    exclusive: bool
    content: str
    mqtt_client_id: str
    mqtt_username: str
    mqtt_password: str


def render(
    product_id: str,
    device_id: str,
    device_secret: str,
    *,
    client_id: str,
    securemode: int,
    signmethod: str,
    timestamp: int | None,
    exclusive: bool = False,
) -> ConnectParams:
    """The three CONNECT fields for a device. Always signs with clientId (and timestamp if any)."""
    for name, value in (("productId", product_id), ("deviceId", device_id)):
        problem = id_error(value)
        if problem:
            raise SigningError("invalid", f"{name} {problem}.", name)
    problem = client_id_error(client_id)
    if problem:
        raise SigningError("invalid", f"clientId {problem}.", "clientId")
    if securemode not in SECURE_MODES:
        raise SigningError("invalid", "securemode must be 2 (TLS) or 3 (plain TCP).", "securemode")
    method = normalize_sign_method(signmethod)
    if method is None:
        raise SigningError(
            "invalid", f"signmethod must be one of {', '.join(SIGN_METHODS)}.", "signmethod"
        )
    if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0):
        raise SigningError("invalid", "timestamp must be a whole number of milliseconds.", "timestamp")
    content = signing_content(product_id, device_id, client_id, timestamp)
    return ConnectParams(
        product_id=product_id,
        device_id=device_id,
        client_id=client_id,
        securemode=securemode,
        signmethod=method,
        timestamp=timestamp,
        exclusive=bool(exclusive),
        content=content,
        mqtt_client_id=build_mqtt_client_id(client_id, securemode, method, timestamp, exclusive),
        mqtt_username=build_username(device_id, product_id),
        mqtt_password=sign(device_secret, content, method),
    )


# -- parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedConnect:
    """What a CONNECT's mqttClientId and mqttUsername say, before the password is checked."""

    client_id: str
    product_id: str
    device_id: str
    securemode: int
    signmethod: str
    signmethod_given: bool
    timestamp: str | None
    exclusive: bool
    extras: dict = field(default_factory=dict)


def parse_extension(text: str) -> dict:
    """``k=v,k=v`` into a dict (keys as written). Empty segments are ignored."""
    params: dict[str, str] = {}
    for segment in text.split(","):
        if segment == "":
            continue
        key, sep, value = segment.partition("=")
        if not sep or key == "":
            raise SigningError(
                "malformed_client_id",
                f"Extension parameter {segment!r} is not of the form key=value.",
                "mqttClientId",
            )
        if key in params:
            raise SigningError(
                "malformed_client_id",
                f"Extension parameter {key!r} is given twice.",
                "mqttClientId",
            )
        params[key] = value
    return params


def split_mqtt_client_id(mqtt_client_id: str) -> tuple[str, str]:
    """``clientId|ext|`` into (clientId, ext); refuses anything else with a reason."""
    if not isinstance(mqtt_client_id, str) or "|" not in mqtt_client_id:
        raise SigningError(
            "malformed_client_id",
            "mqttClientId must be clientId|securemode=...,signmethod=...| (no '|' found).",
            "mqttClientId",
        )
    client_id, _, rest = mqtt_client_id.partition("|")
    if not rest.endswith("|"):
        raise SigningError(
            "malformed_client_id",
            "mqttClientId must end with '|' after the extension parameters.",
            "mqttClientId",
        )
    extension = rest[:-1]
    if "|" in extension:
        raise SigningError(
            "malformed_client_id",
            "mqttClientId must contain exactly two '|': one after the clientId, one at the end.",
            "mqttClientId",
        )
    return client_id, extension


def parse_username(mqtt_username: str) -> tuple[str, str]:
    """``deviceId&productId`` into (deviceId, productId)."""
    if not isinstance(mqtt_username, str) or mqtt_username.count("&") != 1:
        raise SigningError(
            "malformed_username",
            "mqttUsername must be deviceId&productId (exactly one '&').",
            "mqttUsername",
        )
    device_id, _, product_id = mqtt_username.partition("&")
    for name, value in (("deviceId", device_id), ("productId", product_id)):
        problem = id_error(value)
        if problem:
            raise SigningError(
                "malformed_username", f"mqttUsername: the {name} {problem}.", "mqttUsername"
            )
    return device_id, product_id


def parse_connect(mqtt_client_id: str, mqtt_username: str) -> ParsedConnect:
    """Parse and check everything but the password. Raises SigningError with the reason."""
    client_id, extension = split_mqtt_client_id(mqtt_client_id)
    problem = client_id_error(client_id)
    if problem:
        code = "client_id_too_long" if len(client_id) > CLIENT_ID_MAX_LENGTH else "malformed_client_id"
        raise SigningError(code, f"The clientId before '|' {problem}.", "mqttClientId")
    params = parse_extension(extension)

    securemode_raw = params.get("securemode")
    if securemode_raw is None:
        raise SigningError(
            "missing_securemode",
            "securemode is required in the extension parameters (2 for TLS, 3 for plain TCP).",
            "mqttClientId",
        )
    if securemode_raw not in ("2", "3"):
        raise SigningError(
            "bad_securemode",
            f"securemode must be 2 (TLS) or 3 (plain TCP), not {securemode_raw!r}.",
            "mqttClientId",
        )

    signmethod_raw = params.get("signmethod")
    if signmethod_raw is None:
        signmethod = SIGN_METHOD_WHEN_ABSENT
    else:
        signmethod = normalize_sign_method(signmethod_raw)
        if signmethod is None:
            raise SigningError(
                "unsupported_signmethod",
                f"signmethod {signmethod_raw!r} is not supported; use one of "
                f"{', '.join(SIGN_METHODS)}.",
                "mqttClientId",
            )

    timestamp = params.get("timestamp")
    if timestamp is not None and not (
        timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= TIMESTAMP_MAX_DIGITS
    ):
        raise SigningError(
            "bad_timestamp",
            f"timestamp must be milliseconds as at most {TIMESTAMP_MAX_DIGITS} digits, "
            f"not {timestamp[:40]!r}.",
            "mqttClientId",
        )

    exclusive_raw = params.get("exclusive", "false")
    if exclusive_raw.lower() not in ("true", "false"):
        raise SigningError(
            "bad_exclusive",
            f"exclusive must be true or false, not {exclusive_raw!r}.",
            "mqttClientId",
        )

    device_id, product_id = parse_username(mqtt_username)
    known = {"securemode", "signmethod", "timestamp", "exclusive"}
    return ParsedConnect(
        client_id=client_id,
        product_id=product_id,
        device_id=device_id,
        securemode=int(securemode_raw),
        signmethod=signmethod,
        signmethod_given=signmethod_raw is not None,
        timestamp=timestamp,
        exclusive=exclusive_raw.lower() == "true",
        extras={k: v for k, v in params.items() if k not in known},
    )


# -- verifying ------------------------------------------------------------------------------------


def accepted_contents(parsed: ParsedConnect) -> list[str]:
    """Every signing content the spec allows for this CONNECT (§3, decision), canonical first."""
    timestamps = [parsed.timestamp, None] if parsed.timestamp is not None else [None]
    contents = []
    for client_id in (parsed.client_id, None):
        for timestamp in timestamps:
            contents.append(
                signing_content(parsed.product_id, parsed.device_id, client_id, timestamp)
            )
    return contents


def expected_passwords(parsed: ParsedConnect, device_secret: str) -> list[tuple[str, str]]:
    """(content, password) for each accepted content, for the signature debugger."""
    return [
        (content, sign(device_secret, content, parsed.signmethod))
        for content in accepted_contents(parsed)
    ]


def password_matches(parsed: ParsedConnect, device_secret: str, mqtt_password: str) -> bool:
    """Constant-time comparison against every accepted content; hex case is ignored."""
    if not isinstance(mqtt_password, str):
        return False
    given = mqtt_password.lower().encode("utf-8", "replace")
    matched = False
    # No early exit: every candidate is computed and compared.
    for _content, expected in expected_passwords(parsed, device_secret):
        matched |= hmac.compare_digest(expected.encode("ascii"), given)
    return matched


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer. ``reason`` is safe to log: it never holds a secret or password."""

    accepted: bool
    code: str
    reason: str
    parsed: ParsedConnect | None = None


def check_transport(parsed: ParsedConnect, transport: str | None) -> None:
    """Refuse a securemode that does not match the listener, when the listener is known."""
    if transport is None:
        return
    expected = TRANSPORT_FOR_SECURE_MODE[parsed.securemode]
    if transport != expected:
        raise SigningError(
            "securemode_mismatch",
            f"securemode={parsed.securemode} means {expected.upper()}, but the device connected "
            f"over {transport.upper()}; use securemode="
            f"{SECURE_MODE_TLS if transport == 'tls' else SECURE_MODE_TCP} on this port.",
            "mqttClientId",
        )


def check_timestamp(parsed: ParsedConnect, max_skew_ms: int, now: int | None = None) -> None:
    """With a maximum clock skew set, a timestamp is required and must be within it."""
    if not max_skew_ms:
        return
    if parsed.timestamp is None:
        raise SigningError(
            "missing_timestamp",
            "This deployment requires a timestamp (milliseconds) in the extension parameters.",
            "mqttClientId",
        )
    current = now_ms() if now is None else now
    skew = abs(current - int(parsed.timestamp))
    if skew > max_skew_ms:
        raise SigningError(
            "timestamp_out_of_window",
            f"timestamp is {skew} ms away from the broker's clock; at most {max_skew_ms} ms "
            "is allowed. Check the device's clock.",
            "mqttClientId",
        )


def verify_parsed(
    parsed: ParsedConnect,
    mqtt_password: str,
    device_secret: str,
    *,
    transport: str | None = None,
    max_skew_ms: int = 0,
    now: int | None = None,
) -> Verdict:
    """Verify an already parsed CONNECT against the device's secret: the transport and clock
    rules, then the password. The verifier calls this after its one :func:`parse_connect`."""
    try:
        check_transport(parsed, transport)
        check_timestamp(parsed, max_skew_ms, now)
    except SigningError as error:
        return Verdict(False, error.code, error.message, parsed)
    if not password_matches(parsed, device_secret, mqtt_password):
        return Verdict(
            False,
            "bad_signature",
            "mqttPassword does not match the signature of the device's secret.",
            parsed,
        )
    return Verdict(True, "accepted", "accepted", parsed)


def verify(
    mqtt_client_id: str,
    mqtt_username: str,
    mqtt_password: str,
    device_secret: str,
    *,
    product_id: str | None = None,
    device_id: str | None = None,
    transport: str | None = None,
    max_skew_ms: int = 0,
    now: int | None = None,
) -> Verdict:
    """Verify CONNECT fields against a known device secret, with every rule of the spec.

    ``product_id``/``device_id``, when given, must equal what the username names. Callers that
    look the secret up from the username use :func:`parse_connect` first, then
    :func:`verify_parsed`.
    """
    try:
        parsed = parse_connect(mqtt_client_id, mqtt_username)
    except SigningError as error:
        return Verdict(False, error.code, error.message)
    if product_id is not None and (parsed.product_id, parsed.device_id) != (product_id, device_id):
        return Verdict(False, "wrong_device", "mqttUsername names another device.", parsed)
    return verify_parsed(
        parsed, mqtt_password, device_secret, transport=transport, max_skew_ms=max_skew_ms, now=now
    )
