"""The flush thread shared by the connection log and the message trace."""

import logging
import threading
import time

from devices.background import start_flush_thread


class Buffer:
    def __init__(self):
        self.lock = threading.Lock()
        self.thread = None


def test_the_flush_thread_starts_once_and_carries_on_after_a_failed_write(caplog):
    buffer, calls, parked = Buffer(), [], threading.Event()

    def flush():
        if len(calls) >= 3:
            if threading.current_thread() is buffer.thread:
                parked.wait()  # enough seen: the daemon thread waits here, costing nothing
            return  # the flush at exit
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    logger = logging.getLogger("tests.background")
    with caplog.at_level("ERROR", logger="tests.background"):
        start_flush_thread(buffer, name="t", interval_s=0.01, flush=flush, logger=logger, what="x")
        first = buffer.thread
        start_flush_thread(buffer, name="t", interval_s=0.01, flush=flush, logger=logger, what="x")
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert buffer.thread is first and first.daemon
    assert len(calls) >= 3  # the failure did not end the thread
    assert "Could not write x: RuntimeError" in caplog.text
