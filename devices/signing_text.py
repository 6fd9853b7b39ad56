"""The signing scheme's refusals in the reader's language: one translator of
:class:`devices.signing.SigningError` for the options a person picks (``devices.options``) and
the signature debugger (``devices.diagnosis``). ``signing`` decides; this module only says it.
"""

from __future__ import annotations

from django.utils.translation import gettext as _

from . import signing


def sign_method_problem():
    return _("signmethod must be one of %(methods)s.") % {
        "methods": ", ".join(signing.SIGN_METHODS)
    }


def timestamp_option_problem():
    return _(
        "timestamp must be a time in milliseconds (digits only, e.g. 1732500000123), “now”, or "
        "“none” to leave it out."
    )


def identifier_problem(name):
    return _("%(name)s must be 1 to 64 characters of letters, digits and - _ . : @.") % {
        "name": name
    }


def client_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a clientId, in the active language, or None when it can.

    ``signing.client_id_error`` decides; this only says it in words a person reads, naming the
    offending character as ``signing`` finds it."""
    if signing.client_id_error(value) is None:
        return None
    if not isinstance(value, str) or value == "":
        return _("clientId must be 1 to %(max)d characters.") % {
            "max": signing.CLIENT_ID_MAX_LENGTH
        }
    if len(value) > signing.CLIENT_ID_MAX_LENGTH:
        return _("clientId must be at most %(max)d characters (it has %(count)d).") % {
            "max": signing.CLIENT_ID_MAX_LENGTH,
            "count": len(value),
        }
    bad = signing.forbidden_client_id_character(value) or ""
    # An invisible character is named by its code point (U+202E ...): it shows nothing itself.
    shown = {" ": _("a space"), "\t": _("a tab")}.get(bad) or signing.character_shown(bad)
    return _(
        "clientId must not contain | , = & spaces, or control or format characters (found "
        "%(char)s)."
    ) % {"char": shown}


def _render_problem(field: str, value: str | None) -> str:
    if field == "clientId":
        return (client_id_problem(value) if value is not None else None) or _(
            "clientId must be 1 to %(max)d characters, none of | , = & spaces, or control "
            "or format characters."
        ) % {"max": signing.CLIENT_ID_MAX_LENGTH}
    if field == "securemode":
        return securemode_problem()
    if field == "signmethod":
        return sign_method_problem()
    if field == "timestamp":
        return timestamp_option_problem()
    return identifier_problem(field)  # productId, deviceId


def securemode_problem():
    return _("securemode must be 2 (TLS) or 3 (plain TCP).")


def exclusive_problem():
    return _("exclusive must be true or false.")


def _extension_values(mqtt_client_id: str) -> dict:
    """The extension parameters as written ({} when they cannot be read)."""
    try:
        return signing.parse_extension(signing.split_mqtt_client_id(mqtt_client_id)[1])
    except signing.SigningError:
        return {}


def malformed_client_id_text(mqtt_client_id: str) -> str:
    """Which part of a malformed mqttClientId is wrong, in the active language."""
    try:
        client_id, extension = signing.split_mqtt_client_id(mqtt_client_id)
    except signing.SigningError:
        if "|" not in mqtt_client_id:
            return _("mqttClientId must be clientId|securemode=...,signmethod=...| (no “|” "
                     "found).")
        if mqtt_client_id.count("|") == 1:
            return _("mqttClientId must end with “|” after the extension parameters.")
        return _("mqttClientId must contain exactly two “|”: one after the clientId, one at "
                 "the end.")
    problem = client_id_problem(client_id)
    if problem:
        return _("The clientId before “|”: %(problem)s") % {"problem": problem}
    try:
        signing.parse_extension(extension)
    except signing.SigningError:
        keys = [segment.partition("=")[0] for segment in extension.split(",") if segment]
        twice = next((key for key in keys if key and keys.count(key) > 1), None)
        if twice is not None:
            return _("The extension parameter %(key)s is given twice.") % {"key": twice}
    return _("The extension parameters must be key=value pairs separated by commas, e.g. "
             "securemode=3,signmethod=hmacsha256.")


def describe(error: signing.SigningError, mqtt_client_id: str = "", mqtt_username: str = "",
             value: str | None = None) -> str:
    """``error`` said to a person in the active language: the one translator of the scheme's
    refusals, for the options (rendering) and the debugger (parsing) alike.

    ``devices.signing`` stays free of Django, so its messages are English; its ``code`` and
    ``field`` are stable, and the values it complains about are read again from the fields
    themselves (``value``: the option that was refused, when rendering)."""
    if error.code == "invalid":  # signing.render: an option for the fields is not valid
        return _render_problem(error.field or "clientId", value)
    values = _extension_values(mqtt_client_id)
    methods = ", ".join(signing.SIGN_METHODS)
    if error.code == "client_id_too_long":
        client_id = mqtt_client_id.partition("|")[0]
        return _("The clientId before “|” has %(count)d characters; at most %(max)d are "
                 "allowed.") % {"count": len(client_id), "max": signing.CLIENT_ID_MAX_LENGTH}
    if error.code == "missing_securemode":
        return _("securemode is required in the extension parameters (2 for TLS, 3 for plain "
                 "TCP).")
    if error.code == "bad_securemode":
        return _("securemode must be 2 (TLS) or 3 (plain TCP), not “%(value)s”.") % {
            "value": values.get("securemode", "")}
    if error.code == "unsupported_signmethod":
        return _("signmethod “%(value)s” is not supported; use one of %(methods)s.") % {
            "value": values.get("signmethod", ""), "methods": methods}
    if error.code == "bad_timestamp":
        return _("timestamp must be milliseconds as digits, not “%(value)s”.") % {
            "value": values.get("timestamp", "")}
    if error.code == "bad_exclusive":
        return _("exclusive must be true or false, not “%(value)s”.") % {
            "value": values.get("exclusive", "")}
    if error.code == "malformed_username":
        if mqtt_username.count("&") != 1:
            return _("mqttUsername must be deviceId&productId (exactly one “&”).")
        return _("mqttUsername must be deviceId&productId, each 1 to 64 characters of letters, "
                 "digits and - _ . : @.")
    if error.code == "malformed_client_id":
        return malformed_client_id_text(mqtt_client_id)
    return _("These CONNECT fields are not valid (%(code)s).") % {"code": error.code}
