"""Values a client controls, made safe to put in a log line.

A clientId, username, topic or peer address comes from the other end of a socket or an HTTP
body; logged as it is, a newline in it forges a log line, an ESC starts a terminal sequence and
U+202E turns the rest of the line around. ``shown(value)`` wraps such a value for a logger call
(formatting stays lazy: nothing is escaped unless the line is written):

* with ``%r`` it gives Python's repr of the value: quoted, every backslash, control (Cc), format
  (Cf) and other unprintable character escaped (``'a\\nb'``, ``'\\x1b['``, ``'\\u202e'``), so it is
  unambiguous;
* with ``%s`` it gives the text itself with only the unprintable characters escaped: for places
  whose message has no quotes (a peer address) and for text the portal composed around values it
  already quoted with repr (a refusal reason), which it leaves exactly as it was.

Either way the value is cut after ``limit`` characters, and the cut is said.
"""

from __future__ import annotations

MAX_VALUE_CHARS = 200  # a clientId, username, topic or address
MAX_TEXT_CHARS = 2000  # a reason or description the portal composed around such values


def _cut(text: str, limit: int) -> tuple[str, str]:
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"…[{len(text) - limit} more characters]"


def _escape_unprintable(text: str) -> str:
    """``text`` with every character that is not printable as its escape (``\\n``, ``\\x1b``,
    ``\\u202e``); printable text, backslashes included, is left as it is."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class Shown:
    """A client value as a log line shows it (see the module's docstring)."""

    __slots__ = ("value", "limit")

    def __init__(self, value, limit: int = MAX_VALUE_CHARS):
        self.value = value
        self.limit = limit

    def _text(self) -> str | None:
        return self.value if isinstance(self.value, str) else None

    def __repr__(self) -> str:
        text = self._text()
        if text is None:
            return self.__str__() if self.value is not None else "None"
        head, rest = _cut(text, self.limit)
        return repr(head) + rest

    def __str__(self) -> str:
        text = self._text()
        if text is None:
            text = str(self.value)
        head, rest = _cut(text, self.limit)
        return _escape_unprintable(head) + rest


def shown(value, limit: int = MAX_VALUE_CHARS) -> Shown:
    """``value`` wrapped for a logger argument: ``logger.warning("... %r", shown(client_id))``."""
    return Shown(value, limit)
