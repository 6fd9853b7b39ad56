"""The options a person or script picks for a device's connection parameters.

Parsed once from raw strings (a query string or a form) for the console and the JSON endpoint
alike; every problem names its field and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import signing, signing_text
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
        """A refusal of ``signing.render``, in the reader's language (``signing_text``)."""
        return cls(error.field or "clientId", signing_text.describe(error, value=value))



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
                raise OptionError("securemode", signing_text.securemode_problem())
            values["securemode"] = int(securemode)

        signmethod = raw("signmethod")
        if signmethod is not None:
            method = signing.normalize_sign_method(signmethod)
            if method is None:
                raise OptionError("signmethod", signing_text.sign_method_problem())
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
                raise OptionError("timestamp", signing_text.timestamp_option_problem())

        client_id = raw("clientId")
        if client_id is not None:
            problem = signing_text.client_id_problem(client_id)
            if problem:
                raise OptionError("clientId", problem)
            values["client_id"] = client_id

        exclusive = raw("exclusive")
        if exclusive is not None:
            if exclusive.lower() not in ("true", "false"):
                raise OptionError("exclusive", signing_text.exclusive_problem())
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
