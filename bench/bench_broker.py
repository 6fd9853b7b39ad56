"""Connects per second of the embedded broker, with our authentication and without it.

One run, 127.0.0.1, a bounded number of connections per mode. Each connection is a raw-socket
MQTT 3.1.1 CONNECT → CONNACK → DISCONNECT (so the client costs little and the broker is what is
measured), from a few client threads, each thread its own device (so that no connection takes
over another's). Modes:

* ``portal broker``: ``manage.py runbroker`` with the production default (secrets cached ≤ 1 s):
  verification through devices.signing, the registry, the session rules and the status writes.
* ``portal broker, cache off``: the same with every CONNECT looking the device up.
* ``plain amqtt``: amqtt 0.12.1's own Broker, anonymous clients allowed, no plugins of ours.

The portal's broker runs with the production settings (``PORTAL_DEBUG=0``), as deployed.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time

from bench.harness import (
    ROOT,
    connect_packet,
    cpu_seconds,
    free_port,
    production_env,
    set_up_django,
    stop,
    wait_listening,
)

CONNECTIONS = int(os.environ.get("BENCH_BROKER_CONNECTIONS", "1000"))
THREADS = int(os.environ.get("BENCH_BROKER_THREADS", "4"))
SECRET = "bench-secret-0123456789abcdefABCD"
FLUSH_WAIT_S = 0.5

PLAIN_AMQTT = """
import asyncio, sys
from amqtt.broker import Broker
async def main():
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                 {"allow_anonymous": True}}})
    await broker.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def measure(port, packets, connections=CONNECTIONS):
    """CONNECT/CONNACK/DISCONNECT cycles, split over threads; (connects/s, latencies, failures)."""
    per_thread = connections // len(packets)
    latencies, failures = [], []
    lock = threading.Lock()

    def worker(packet):
        mine, bad = [], 0
        for _ in range(per_thread):
            started = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(packet)
                    connack = b""
                    while len(connack) < 4:
                        chunk = sock.recv(4 - len(connack))
                        if not chunk:
                            break
                        connack += chunk
                    mine.append(time.perf_counter() - started)
                    if connack != b"\x20\x02\x00\x00":
                        bad += 1
                    sock.sendall(b"\xe0\x00")
            except OSError:
                bad += 1
        with lock:
            latencies.extend(mine)
            failures.append(bad)

    threads = [threading.Thread(target=worker, args=(p,)) for p in packets]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    done = per_thread * len(packets)
    return done / elapsed, latencies, sum(failures)


def _rows(mode, rate, latencies, failures, cpu_s):
    latencies = sorted(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1] if latencies else None
    extra = {"connections": len(latencies), "threads": THREADS, "failures": failures}
    return [
        {"benchmark": mode, "metric": "connects per second", "value": rate, "unit": "1/s", **extra},
        # The broker's own CPU time (all its threads: the log's and status writes included):
        # steadier than the rate on a machine shared with the clients and other work.
        {"benchmark": mode, "metric": "broker CPU ms per 1000 connects", "unit": "ms", **extra,
         "value": cpu_s * 1e6 / len(latencies) if latencies else None},
        {"benchmark": mode, "metric": "CONNECT→CONNACK p50", "unit": "ms", **extra,
         "value": statistics.median(latencies) * 1000 if latencies else None},
        {"benchmark": mode, "metric": "CONNECT→CONNACK p95", "unit": "ms", **extra,
         "value": p95 * 1000 if p95 else None},
    ]


def run():
    set_up_django("bench-broker-")
    from devices import signing
    from devices.models import Device, Product

    product = Product.objects.create(product_id="bench", name="Benchmark")
    packets = []
    for index in range(THREADS):
        device = Device.objects.create(product=product, device_id=f"dev-{index}", device_secret=SECRET)
        fields = signing.render(product.product_id, device.device_id, SECRET, client_id=f"c{index}",
                                securemode=3, signmethod="hmacsha256", timestamp=signing.now_ms())
        packets.append(connect_packet(fields.mqtt_client_id, fields.mqtt_username, fields.mqtt_password))

    rows = []
    modes = [
        ("portal broker", [sys.executable, str(ROOT / "manage.py"), "runbroker", "--port"], {}),
        ("portal broker, cache off", [sys.executable, str(ROOT / "manage.py"), "runbroker", "--port"],
         {"PORTAL_MQTT_AUTH_CACHE_MS": "0"}),
        ("plain amqtt (anonymous)", None, {}),
    ]
    for mode, command, extra_env in modes:
        port = free_port()
        if command is None:
            command = [sys.executable, "-c", PLAIN_AMQTT % port]
        else:
            command = command + [str(port)]
        env = production_env(**extra_env)
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, process)
            measure(port, packets[:1], 20)  # warm-up: imports, first DB connections
            cpu = cpu_seconds(process.pid)
            rate, latencies, failures = measure(port, packets)
            time.sleep(FLUSH_WAIT_S)  # the connection log and status batches of the last ones
            cpu = cpu_seconds(process.pid) - cpu
        finally:
            stop(process)
        rows += _rows(mode, rate, latencies, failures, cpu)
    return rows
