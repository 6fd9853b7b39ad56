"""Cold device look-ups of the embedded broker, coalesced: one query for many CONNECTs.

A CONNECT whose device is not in the verifier's short cache needs the registry. One query per
CONNECT, each a hop to a worker thread, is what made a reconnect storm (thousands of devices at
once after a broker restart or a network outage) slow. :class:`DeviceLoader` runs one query at a
time on the event loop's behalf: the CONNECTs that ask while it runs wait for the next one, which
fetches all of them together (one query, an OR of (productId, deviceId) pairs). A look-up never
shares a query that started before it asked, so what it gets is as fresh as a query of its own:
the verifier's rules (the ≤ 1 s cache, the 2 s disable/rotate rule) are unchanged.

Found devices go into the verifier's short cache as ``verifier.lookup_device`` puts them there;
unknown ones are not cached (as there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from django.conf import settings

from . import verifier

Key = tuple[str, str]  # (productId, deviceId)


def fetch_records(keys: Iterable[Key]) -> dict[Key, verifier.DeviceRecord]:
    """The records of those of ``keys`` that exist (ORM work: call it on a worker thread), one
    query per ``hot_queries.DEVICE_RECORDS_CHUNK`` keys, and put them in the verifier's short cache."""
    from devices import hot_queries

    found: dict[Key, verifier.DeviceRecord] = {}
    # One query per DEVICE_RECORDS_CHUNK keys, SQL built once (devices/hot_queries.py)
    for key, row in hot_queries.device_records(keys).items():
        pk, secret, enabled, rotated = row
        found[key] = verifier.DeviceRecord(
            pk=pk, product_id=key[0], device_id=key[1], secret=secret, enabled=enabled,
            secret_rotated_at=rotated,
        )
    if settings.MQTT_AUTH_CACHE_MS > 0:
        for key, record in found.items():
            verifier.registry_cache.put(key, record)
    return found


class DeviceLoader:
    """``await load(key)`` → the device's record or None. ``fetch`` runs one batch (an awaitable
    of ``{key: record}``, e.g. :func:`fetch_records` on a worker thread); at most one runs at a
    time. Used from one event loop."""

    def __init__(self, fetch: Callable[[list[Key]], Awaitable[dict[Key, verifier.DeviceRecord]]]):
        self._fetch = fetch
        self._waiting: dict[Key, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None
        self.batches = 0  # queries run (for tests and benchmarks)

    async def load(self, key: Key) -> verifier.DeviceRecord | None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        batch: dict = {}
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                self.batches += 1
                try:
                    found = await self._fetch(list(batch))
                except Exception as error:  # every waiter of this batch gets the failure
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(error)
                    continue
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(found.get(key))
        finally:  # cancelled (the broker stops): no waiter of this batch or the next hangs
            self._task = None
            for futures in [*batch.values(), *self._waiting.values()]:
                for future in futures:
                    if not future.done():
                        future.cancel()
            self._waiting = {}
