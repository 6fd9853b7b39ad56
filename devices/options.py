"""The options a person or script picks for a device's connection parameters.

Parsed once from raw strings (a query string or a form) for the console and the JSON endpoint
alike; every problem names its field and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _

from . import signing
from .choices import DEFAULT_SIGN_METHOD

# The query parameters of the options, as the JSON endpoint and the console's form name them.
QUERY_NAMES = ("securemode", "signmethod", "timestamp", "clientId", "exclusive")


class OptionError(ValueError):
    """A bad option: ``field`` names it, ``message`` (in the active language) says what is allowed,
    ``code`` is stable for scripts."""

    def __init__(self, field: str, message: str, code: str = "invalid_option"):
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code

    @classmethod
    def from_signing_error(cls, error: signing.SigningError, value: str | None = None):
        """The signing module speaks English only (it stays free of Django); what it refused is
        said again here, translated, from the field it names (and the value, when known)."""
        field = error.field or "clientId"
        if field == "clientId":
            message = (client_id_problem(value) if value is not None else None) or _(
                "clientId must be 1 to %(max)d characters, none of | , = & spaces, or control "
                "or format characters."
            ) % {"max": signing.CLIENT_ID_MAX_LENGTH}
        elif field == "securemode":
            message = _("securemode must be 2 (TLS) or 3 (plain TCP).")
        elif field == "signmethod":
            message = _sign_method_problem()
        elif field == "timestamp":
            message = _timestamp_problem()
        else:  # productId, deviceId
            message = _identifier_problem(field)
        return cls(field, message)


def _sign_method_problem():
    return _("signmethod must be one of %(methods)s.") % {
        "methods": ", ".join(signing.SIGN_METHODS)
    }


def _timestamp_problem():
    return _(
        "timestamp must be a time in milliseconds (digits only, e.g. 1732500000123), “now”, or "
        "“none” to leave it out."
    )


def _identifier_problem(name):
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


@dataclass(frozen=True)
class ConnectionOptions:
    securemode: int | None = None  # None: TLS when the deployment has a TLS port, else TCP
    signmethod: str = DEFAULT_SIGN_METHOD
    timestamp: int | None | str = "now"  # "now", None (left out) or milliseconds
    client_id: str | None = None  # None: the deviceId
    exclusive: bool = False

    @classmethod
    def from_query(cls, query) -> ConnectionOptions:
        """From a mapping of raw strings (``request.GET``); absent or empty keys take defaults."""

        def raw(name):
            value = query.get(name)
            return None if value is None or value == "" else value

        values = {}
        securemode = raw("securemode")
        if securemode is not None:
            if securemode not in ("2", "3"):
                raise OptionError("securemode", _("securemode must be 2 (TLS) or 3 (plain TCP)."))
            values["securemode"] = int(securemode)

        signmethod = raw("signmethod")
        if signmethod is not None:
            method = signing.normalize_sign_method(signmethod)
            if method is None:
                raise OptionError("signmethod", _sign_method_problem())
            values["signmethod"] = method

        timestamp = raw("timestamp")
        if timestamp is not None:
            if timestamp == "none":
                values["timestamp"] = None
            elif timestamp == "now":
                values["timestamp"] = "now"
            elif timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 16:
                values["timestamp"] = int(timestamp)
            else:
                raise OptionError("timestamp", _timestamp_problem())

        client_id = raw("clientId")
        if client_id is not None:
            problem = client_id_problem(client_id)
            if problem:
                raise OptionError("clientId", problem)
            values["client_id"] = client_id

        exclusive = raw("exclusive")
        if exclusive is not None:
            if exclusive.lower() not in ("true", "false"):
                raise OptionError("exclusive", _("exclusive must be true or false."))
            values["exclusive"] = exclusive.lower() == "true"
        return cls(**values)

    def resolved_timestamp(self) -> int | None:
        return signing.now_ms() if self.timestamp == "now" else self.timestamp

    def as_query(self) -> dict:
        """The options as query parameters, the inverse of :meth:`from_query`."""
        query = {
            "signmethod": self.signmethod,
            "timestamp": "none" if self.timestamp is None else str(self.timestamp),
            "exclusive": "true" if self.exclusive else "false",
        }
        if self.securemode is not None:
            query["securemode"] = str(self.securemode)
        if self.client_id is not None:
            query["clientId"] = self.client_id
        return query
