"""The flush thread behind the connection log and the message trace: a process-wide buffer that
its owner fills without touching the database, written every ``interval_s`` by one daemon thread,
and once more when the process exits. A failed write is logged and the thread carries on (its
database connection is dropped, so that the next write opens a fresh one)."""

from __future__ import annotations

import atexit
import threading
import time


def start_flush_thread(buffer, *, name: str, interval_s: float, flush, logger, what: str) -> None:
    """Start ``buffer``'s flush thread once per process. ``buffer`` has ``lock`` and ``thread``;
    ``flush()`` writes what it holds; ``what`` names it in the error line."""
    with buffer.lock:
        if buffer.thread is not None:
            return
        buffer.thread = threading.Thread(
            target=_flush_forever, args=(interval_s, flush, logger, what), name=name, daemon=True
        )
        buffer.thread.start()
    atexit.register(_flush_quietly, flush)


def _flush_forever(interval_s, flush, logger, what):
    from django.db import close_old_connections, connection

    while True:
        time.sleep(interval_s)
        try:
            flush()
        except Exception as error:  # noqa: BLE001 (a buffer is not worth a dead thread)
            logger.error("Could not write %s: %s", what, type(error).__name__)
            close_old_connections()
            connection.close()


def _flush_quietly(flush):
    try:
        flush()
    except Exception:  # noqa: BLE001 (the process is ending)
        pass
