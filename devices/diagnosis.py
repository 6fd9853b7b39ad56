"""The signature debugger: why would the broker refuse these CONNECT fields?

A person pastes what a device sent (the three CONNECT fields, or the mqttClientId alone, and
optionally the content the device's code signed). This module explains, in words, what the
verifier sees and which part differs. Every rule comes from :mod:`devices.signing`; this module
only tries the common *mistakes* against it (a wrong clientId or timestamp, swapped or reordered
parts, a wrong sign method, stray spaces, a missing ``|``) so that it can name them.
The device secret is used to compute expected passwords and is never part of the result.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hmac
import re
from dataclasses import dataclass, field

from django.utils.translation import gettext as _

from . import signing
from .signing_text import describe

ERROR, WARNING, INFO, OK = "error", "warning", "info", "ok"

# Names other platforms use in the signing content (Alibaba Cloud: productKey, deviceName).
_CONTENT_NAMES = re.compile(r"(clientId|deviceId|productId|timestamp|deviceName|productKey)")


@dataclass(frozen=True)
class Finding:
    level: str  # error, warning, info or ok
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class ExpectedPassword:
    label: str
    content: str
    password: str
    matched: bool


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    parsed: signing.ParsedConnect | None = None
    canonical_content: str | None = None
    expected: list[ExpectedPassword] = field(default_factory=list)
    accepted: bool | None = None  # None: no password to judge

    @property
    def errors(self):
        return [f for f in self.findings if f.level == ERROR]

    def codes(self):
        return [f.code for f in self.findings]

    def add(self, level, code, message, field_name=None):
        self.findings.append(Finding(level, code, message, field_name))


def first_difference(given: str, expected: str) -> int | None:
    """Index of the first character where ``given`` and ``expected`` differ, or None."""
    for index, (a, b) in enumerate(zip(given, expected, strict=False)):
        if a != b:
            return index
    if len(given) != len(expected):
        return min(len(given), len(expected))
    return None


def _hex_length(method: str) -> int:
    return signing.SIGN_METHODS[method]().digest_size * 2


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.lower().encode("utf-8", "replace"), b.lower().encode("utf-8", "replace"))


def _content_pieces(content: str) -> list[tuple[str, str]]:
    """A pasted content cut at the parameter names it mentions: [(name, value), ...]."""
    parts = _CONTENT_NAMES.split(content)
    pieces = []
    for index in range(1, len(parts) - 1, 2):
        pieces.append((parts[index], parts[index + 1]))
    return pieces


def _variant_label(parsed: signing.ParsedConnect, content: str) -> str:
    for client_id in (parsed.client_id, None):
        for timestamp in (parsed.timestamp, None):
            if content == signing.signing_content(
                parsed.product_id, parsed.device_id, client_id, timestamp
            ):
                with_client = client_id is not None
                with_time = timestamp is not None
                if with_client and with_time:
                    return _("with clientId and timestamp (what the portal renders)")
                if with_client:
                    return _("with clientId, without timestamp")
                if with_time:
                    return _("without clientId, with timestamp")
                return _("without clientId and timestamp")
    return ""


def diagnose(
    device,
    mqtt_client_id: str,
    mqtt_username: str = "",
    mqtt_password: str = "",
    signed_content: str = "",
    *,
    transport: str | None = None,
    now_ms: int | None = None,
) -> Diagnosis:
    """Explain what the broker would make of these fields for ``device``.

    ``transport`` ("tcp" | "tls"), when known (the connection log knows it), adds whether the
    securemode fits the port; ``now_ms``, the broker's clock at the CONNECT, adds whether the
    timestamp is hours away from it. The debugger page knows neither and leaves them out."""
    result = Diagnosis()
    product_id, device_id = device.product.product_id, device.device_id
    secret = device.device_secret

    # Stray whitespace: the commonest copy-paste damage. Report it, then look past it.
    fields = {
        "mqttClientId": mqtt_client_id or "",
        "mqttUsername": mqtt_username or "",
        "mqttPassword": mqtt_password or "",
        "content": signed_content or "",
    }
    for name, value in fields.items():
        cleaned = re.sub(r"\s+", "", value) if name in ("mqttPassword",) else value.strip()
        if cleaned != value:
            result.add(
                ERROR,
                "stray_spaces",
                _("%(field)s has spaces or line breaks around or inside it; the broker compares "
                  "it exactly. Remove them.") % {"field": name},
                name,
            )
            fields[name] = cleaned
    client_field, username, password = (
        fields["mqttClientId"], fields["mqttUsername"], fields["mqttPassword"]
    )
    if not client_field:
        result.add(ERROR, "missing_client_id", _("Paste the mqttClientId the device sent."),
                   "mqttClientId")
        return result
    own_username = signing.build_username(device_id, product_id)
    if not username:
        username = own_username
        result.add(INFO, "username_assumed",
                   _("No mqttUsername given; assumed %(username)s.") % {"username": own_username},
                   "mqttUsername")

    # A missing closing '|' is easy to spot and to look past.
    if client_field.count("|") == 1 and not client_field.endswith("|"):
        result.add(
            ERROR,
            "missing_trailing_pipe",
            _("mqttClientId must end with '|' after the extension parameters: "
              "write %(fixed)s") % {"fixed": client_field + "|"},
            "mqttClientId",
        )
        client_field += "|"

    try:
        signing.split_mqtt_client_id(client_field)
        signing.parse_connect(client_field, own_username)
    except signing.SigningError as error:
        result.add(ERROR, error.code, describe(error, client_field, own_username),
                   "mqttClientId")
        return result

    try:
        parsed = signing.parse_connect(client_field, username)
    except signing.SigningError as error:
        result.add(ERROR, error.code, describe(error, client_field, username),
                   "mqttUsername")
        parsed = signing.parse_connect(client_field, own_username)
    else:
        if (parsed.product_id, parsed.device_id) != (product_id, device_id):
            if (parsed.device_id, parsed.product_id) == (product_id, device_id):
                result.add(
                    ERROR,
                    "username_wrong_order",
                    _("mqttUsername is productId&deviceId; the order is deviceId&productId: "
                      "%(username)s") % {"username": own_username},
                    "mqttUsername",
                )
            else:
                result.add(
                    ERROR,
                    "wrong_device",
                    _("mqttUsername names another device (%(given)s); this device is "
                      "%(username)s.") % {"given": username, "username": own_username},
                    "mqttUsername",
                )
            parsed = signing.parse_connect(client_field, own_username)
    result.parsed = parsed

    if not parsed.signmethod_given:
        result.add(INFO, "signmethod_default",
                   _("No signmethod given, so the broker assumes hmacmd5."), "mqttClientId")
    _check_transport_and_clock(result, parsed, transport, now_ms)
    if parsed.extras:
        result.add(INFO, "unknown_keys",
                   _("Unknown extension parameters are ignored: %(keys)s")
                   % {"keys": ", ".join(sorted(parsed.extras))}, "mqttClientId")

    contents = signing.expected_passwords(parsed, secret)
    result.canonical_content = contents[0][0]

    if not password:
        result.expected = [
            ExpectedPassword(_variant_label(parsed, c), c, p, False) for c, p in contents
        ]
        result.add(INFO, "no_password",
                   _("Paste the mqttPassword too, to find out whether it matches."),
                   "mqttPassword")
        _compare_content(result, parsed, secret, fields["content"], password)
        return result

    result.expected = [
        ExpectedPassword(_variant_label(parsed, c), c, p, _same(password, p)) for c, p in contents
    ]
    if password != password.lower() and password.isascii():
        result.add(INFO, "uppercase_hex",
                   _("The password is written in uppercase hex; the broker ignores hex case, "
                     "the portal writes lowercase."), "mqttPassword")

    result.accepted = signing.password_matches(parsed, secret, password)
    if result.accepted and result.errors:
        # The signature is right but the broker still refuses the CONNECT as sent (e.g. the
        # missing '|' looked past above): saying "accepts" here would contradict that problem.
        result.add(OK, "accepted",
                   _("The password matches this device's secret. Fix the problem above and the "
                     "broker accepts these fields (if the device is enabled and uses the right "
                     "port)."), "mqttPassword")
        return result
    if result.accepted:
        result.add(OK, "accepted",
                   _("The password matches this device's secret: the broker accepts these fields "
                     "(if the device is enabled and uses the right port)."), "mqttPassword")
        return result

    if not re.fullmatch(r"[0-9A-Fa-f]+", password):
        result.add(ERROR, "not_hex",
                   _("mqttPassword must be the signature as hexadecimal digits (0-9, a-f)."),
                   "mqttPassword")
    explained = _explain_previous_secret(result, device, parsed, password)
    explained |= _explain_mismatch(result, parsed, secret, password, client_field)
    explained |= _compare_content(result, parsed, secret, fields["content"], password)
    if not explained:
        rotated = device.secret_rotated_at
        hint = (
            _(" The secret was rotated on %(when)s; a device with the old secret is refused.")
            % {"when": rotated.strftime("%Y-%m-%d %H:%M UTC")}
            if rotated else ""
        )
        result.add(
            ERROR,
            "wrong_secret",
            _("The password matches none of the contents the spec allows with this device's "
              "current secret: most likely the device signs with another secret, or with values "
              "that differ from the ones it sends. Paste the content it signed to find out.")
            + hint,
            "mqttPassword",
        )
    return result


def _explain_mismatch(result, parsed, secret, password, mqtt_client_id) -> bool:
    """Try the usual mistakes; add a finding for each that explains the password."""
    explained = False
    method = parsed.signmethod
    if re.fullmatch(r"[0-9A-Fa-f]+", password) and len(password) != _hex_length(method):
        fitting = [m for m in signing.SIGN_METHODS if _hex_length(m) == len(password)]
        stated = method if parsed.signmethod_given else _("no signmethod, so hmacmd5")
        message = _("The password has %(n)d hex digits, but %(stated)s gives %(m)d.") % {
            "n": len(password), "stated": stated, "m": _hex_length(method)}
        if fitting:
            message += " " + _("%(fit)s gives %(n)d: declare signmethod=%(fit)s in mqttClientId "
                               "or sign with %(method)s.") % {
                "fit": fitting[0], "n": len(password), "method": method}
        result.add(ERROR, "signmethod_mismatch", message, "mqttClientId")
        for other in fitting:
            if signing.password_matches(dataclasses.replace(parsed, signmethod=other), secret,
                                        password):
                result.add(ERROR, "signed_with_other_method",
                           _("The password is right for %(fit)s: the secret is correct, only the "
                             "signmethod is wrong.") % {"fit": other}, "mqttClientId")
        explained = True

    guesses = []
    for other_client in (parsed.device_id, f"{parsed.product_id}.{parsed.device_id}",
                         mqtt_client_id):
        if other_client != parsed.client_id:
            guesses.append(other_client)
    for other_client in guesses:
        variant = dataclasses.replace(parsed, client_id=other_client)
        if signing.password_matches(variant, secret, password):
            result.add(
                ERROR,
                "client_id_differs",
                _("The device signed clientId %(signed)s, but its mqttClientId starts with "
                  "%(sent)s. Sign the clientId it sends.")
                % {"signed": other_client, "sent": parsed.client_id},
                "mqttClientId",
            )
            explained = True

    if parsed.timestamp is not None:
        signed = _find_signed_timestamp(parsed, secret, password)
        if signed is not None:
            result.add(
                ERROR,
                "timestamp_differs",
                _("The device signed timestamp %(signed)s, but its mqttClientId says "
                  "%(sent)s. Sign the timestamp it sends.")
                % {"signed": signed, "sent": parsed.timestamp},
                "mqttClientId",
            )
            explained = True

    pid, did, cid, ts = parsed.product_id, parsed.device_id, parsed.client_id, parsed.timestamp
    tail = f"timestamp{ts}" if ts is not None else ""
    wrong_orders = [
        f"productId{pid}deviceId{did}clientId{cid}{tail}",
        f"{tail}productId{pid}deviceId{did}clientId{cid}",
        f"deviceId{did}productId{pid}clientId{cid}{tail}",
        f"clientId{cid}productId{pid}deviceId{did}{tail}",
    ]
    for content in wrong_orders:
        if _same(password, signing.sign(secret, content, parsed.signmethod)):
            result.add(
                ERROR,
                "wrong_order",
                _("The device signed the parameters in the wrong order (%(content)s). Sort them "
                  "by name: clientId, deviceId, productId, timestamp: %(canonical)s")
                % {"content": content, "canonical": result.canonical_content},
                "content",
            )
            explained = True
    alibaba = f"clientId{cid}deviceName{did}productKey{pid}{tail}"
    if _same(password, signing.sign(secret, alibaba, parsed.signmethod)):
        result.add(
            ERROR,
            "alibaba_names",
            _("The device signed with the names deviceName/productKey; this platform's content "
              "uses deviceId/productId: %(canonical)s") % {"canonical": result.canonical_content},
            "content",
        )
        explained = True
    return explained


# Work shared between diagnoses of the same fields in several languages (the connection log
# renders each finding in English and Chinese): only inside ``shared_work()``, dropped after it.
_shared = contextvars.ContextVar("diagnosis_shared_work", default=None)


@contextlib.contextmanager
def shared_work():
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


def _find_signed_timestamp(parsed, secret, password, window_ms=1500) -> str | None:
    """A timestamp near the one sent (read from the clock twice, or seconds for milliseconds)
    that explains the password, or None. A few thousand HMACs: milliseconds of work."""
    memo = _shared.get()
    if memo is None:
        return _search_signed_timestamp(parsed, secret, password, window_ms)
    key = ("timestamp", parsed.client_id, parsed.product_id, parsed.device_id, parsed.timestamp,
           parsed.signmethod, secret, password, window_ms)
    if key not in memo:
        memo[key] = _search_signed_timestamp(parsed, secret, password, window_ms)
    return memo[key]


def _search_signed_timestamp(parsed, secret, password, window_ms) -> str | None:
    # The contents that carry a timestamp end with it (signing.signing_content sorts by name), so
    # each candidate is the two fixed prefixes plus its digits, signed from one keyed HMAC.
    sent = int(parsed.timestamp)
    candidates = [sent // 1000, sent * 1000]
    for delta in range(1, window_ms + 1):
        candidates.extend((sent - delta, sent + delta))
    keyed = hmac.new(secret.encode("utf-8"), digestmod=signing.SIGN_METHODS[parsed.signmethod])
    prefixes = [
        (signing.signing_content(parsed.product_id, parsed.device_id, client_id) + "timestamp")
        .encode("utf-8")
        for client_id in (parsed.client_id, None)
    ]
    for candidate in candidates:
        if candidate < 0:
            continue
        digits = str(candidate).encode("ascii")
        for prefix in prefixes:
            signature = keyed.copy()
            signature.update(prefix + digits)
            if _same(password, signature.hexdigest()):
                return str(candidate)
    return None


def _compare_content(result, parsed, secret, content, password) -> bool:
    """Compare the content the device says it signed with the ones the spec allows."""
    if not content:
        return False
    allowed = signing.accepted_contents(parsed)
    explained = False
    if password and re.fullmatch(r"[0-9A-Fa-f]+", password):
        if _same(password, signing.sign(secret, content, parsed.signmethod)):
            result.add(INFO, "secret_ok",
                       _("The password is the signature of the content you pasted, so the secret "
                         "is right; the content is what differs."), "content")
        elif content in allowed:
            result.add(ERROR, "wrong_secret",
                       _("The content you pasted is allowed, but the password is not its "
                         "signature with this device's secret: the device uses another secret."),
                       "mqttPassword")
            return True
    if content in allowed:
        result.add(OK, "content_ok", _("The content you pasted is one the spec allows."), "content")
        return explained
    canonical = allowed[0]
    lowered = [c.lower() for c in allowed]
    pieces = _content_pieces(content)
    names = [name for name, _value in pieces]
    values = dict(pieces)
    if content.lower() in lowered:
        result.add(ERROR, "content_case",
                   _("The content differs only in upper/lower case; names and values are "
                     "case-sensitive: %(canonical)s") % {"canonical": canonical}, "content")
        return True
    if "deviceName" in names or "productKey" in names:
        result.add(ERROR, "alibaba_names",
                   _("The device signed with the names deviceName/productKey; this platform's "
                     "content uses deviceId/productId: %(canonical)s") % {"canonical": canonical},
                   "content")
        explained = True
    if len(names) == len(set(names)) and names != sorted(names, key=str.lower):
        result.add(ERROR, "wrong_order",
                   _("The parameters are in the wrong order (%(given)s). Sort them by name: "
                     "clientId, deviceId, productId, timestamp.") % {"given": ", ".join(names)},
                   "content")
        explained = True
    if "timestamp" in values and values["timestamp"] != (parsed.timestamp or ""):
        result.add(ERROR, "timestamp_differs",
                   _("The device signed timestamp %(signed)s, but its mqttClientId says "
                     "%(sent)s. Sign the timestamp it sends.")
                   % {"signed": values["timestamp"], "sent": parsed.timestamp or _("none")},
                   "content")
        explained = True
    if "clientId" in values and values["clientId"] != parsed.client_id:
        result.add(ERROR, "client_id_differs",
                   _("The device signed clientId %(signed)s, but its mqttClientId starts with "
                     "%(sent)s. Sign the clientId it sends.")
                   % {"signed": values["clientId"], "sent": parsed.client_id}, "content")
        explained = True
    for name, expected in (("deviceId", parsed.device_id), ("productId", parsed.product_id)):
        if name in values and values[name] != expected:
            result.add(ERROR, "id_differs",
                       _("The device signed %(name)s %(signed)s; this device's is %(expected)s.")
                       % {"name": name, "signed": values[name], "expected": expected}, "content")
            explained = True
    if not explained:
        position = first_difference(content, canonical)
        result.add(ERROR, "content_differs",
                   _("The content differs from %(canonical)s at character %(pos)d.")
                   % {"canonical": canonical, "pos": (position or 0) + 1}, "content")
        explained = True
    return explained


# A timestamp some device SDKs send as a constant: 2050-01-01 00:00:00 UTC in milliseconds.
SDK_FIXED_TIMESTAMP = "2524608000000"
# An accepted CONNECT whose timestamp is this far from the broker's clock gets a warning.
CLOCK_WARNING_MS = 60 * 60 * 1000


def clock_findings(timestamp: str | None, now_ms: int | None) -> list[Finding]:
    """Warnings about a CONNECT's timestamp: an SDK's fixed value, or hours away from the
    broker's clock (``now_ms``). Also given for accepted CONNECTs, which carry no password."""
    findings = []
    if timestamp is None or not timestamp.isdigit():
        return findings
    if timestamp == SDK_FIXED_TIMESTAMP:
        findings.append(Finding(
            WARNING, "fixed_timestamp",
            _("The timestamp %(ts)s (the year 2050) looks like a fixed value from an SDK's "
              "example, not the device's clock: send the current time in milliseconds.")
            % {"ts": timestamp}, "mqttClientId"))
    elif now_ms is not None and abs(now_ms - int(timestamp)) > CLOCK_WARNING_MS:
        hours = abs(now_ms - int(timestamp)) / 3_600_000
        findings.append(Finding(
            WARNING, "clock_skew",
            _("The timestamp is %(hours).1f hours %(direction)s the broker's clock: set the "
              "device's clock (NTP).")
            % {"hours": hours,
               "direction": _("ahead of") if int(timestamp) > now_ms else _("behind")},
            "mqttClientId"))
    return findings


def _check_transport_and_clock(result, parsed, transport, now_ms):
    if transport is not None:
        expected = signing.TRANSPORT_FOR_SECURE_MODE[parsed.securemode]
        if transport != expected:
            result.add(
                ERROR, "securemode_mismatch",
                _("securemode=%(mode)d means %(expected)s, but the device connected to the "
                  "%(port)s port: use securemode=%(right)d there, or connect to the %(expected)s "
                  "port.")
                % {"mode": parsed.securemode, "expected": expected.upper(),
                   "port": _("plain TCP") if transport == "tcp" else "TLS",
                   "right": signing.SECURE_MODE_TLS if transport == "tls" else signing.SECURE_MODE_TCP},
                "mqttClientId")
    result.findings.extend(clock_findings(parsed.timestamp, now_ms))


def _explain_previous_secret(result, device, parsed, password) -> bool:
    previous = getattr(device, "previous_secret", "")
    if not previous or not signing.password_matches(parsed, previous, password):
        return False
    rotated = device.secret_rotated_at
    result.add(
        ERROR, "previous_secret",
        _("The password is right for the previous secret (rotated at %(when)s): give the device "
          "its new secret.")
        % {"when": rotated.strftime("%Y-%m-%d %H:%M UTC") if rotated else "?"},
        "mqttPassword")
    return True
