"""API tokens resolved to their user and that user's permissions, kept ≤ 1 s per process.

``ApiToken.authenticate`` costs a token query, and the first ``has_perm`` after it two more (the
user's and its groups' permissions), on every request. Here the answer (the user with Django's
permission caches filled) is kept for ``TTL_S`` in this process. That bounds how long a change
takes: a deleted token, a deactivated user or a removed permission is refused at most ``TTL_S``
(1 s) later, in every process (the bound the broker's device cache has, spec §4). Only positive
answers are kept: an unknown token is looked up every time, and counted by the throttle
(``devices.throttle``, which is asked on every request, uncached).

Each request gets its own shallow copy of the user, so an attribute a view sets on
``request.user`` never reaches another request.
"""

from __future__ import annotations

import copy
import threading
import time

from .models import ApiToken

TTL_S = 1.0
MAX_ENTRIES = 10_000

_entries: dict[str, tuple[float, object]] = {}
_lock = threading.Lock()


def clear():
    with _lock:
        _entries.clear()


def authenticate(token: str):
    """The active user the token belongs to (a fresh copy, permissions loaded), or None."""
    if not token or not token.startswith(ApiToken.PREFIX):
        return None
    key = ApiToken.hash_token(token)
    now = time.monotonic()
    with _lock:
        entry = _entries.get(key)
    if entry is not None and now - entry[0] <= TTL_S:
        return copy.copy(entry[1])
    user = ApiToken.authenticate(token)  # also keeps last_used_at (once a minute)
    if user is None:
        return None
    user.get_all_permissions()  # fills ModelBackend's caches: has_perm asks no more queries
    with _lock:
        if len(_entries) >= MAX_ENTRIES:  # bounded: forget everything rather than grow
            _entries.clear()
        _entries[key] = (now, user)
    return copy.copy(user)
