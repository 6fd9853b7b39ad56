"""Scale: thousands of devices connected at once, a reconnect storm, a large registry.

* ``many connected``: HELD devices hold connections to one embedded broker (``runbroker``,
  production settings); all must be accepted; the broker's memory per connection; while they are
  connected, a takeover, an ``exclusive`` refusal and a disable must each take effect within 2 s.
* ``reconnect storm``: STORM devices (not yet in the verifier's cache) connect within one second;
  each must be answered with a CONNACK, none dropped; the time to the last CONNACK.
* ``large registry``: bench/scale_registry.py (REGISTRY devices in one product on SQLite).

Clients are raw asyncio sockets (bench/scale_broker.py), in this process.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time

from bench import scale_broker as sb
from bench.harness import ROOT, free_port, production_env, set_up_django, stop, wait_listening

HELD = int(os.environ.get("BENCH_SCALE_HELD", "5000"))
STORM = int(os.environ.get("BENCH_SCALE_STORM", "2000"))
REGISTRY = int(os.environ.get("BENCH_SCALE_REGISTRY", "1000000"))
SECRET = "bench-secret-0123456789abcdefABCD"


def _raise_file_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def broker_rows(port, pid, loop):
    from devices.models import Device, Product

    rows = []
    product = Product.objects.get(product_id="scale")
    ids = [f"held-{i:06d}" for i in range(HELD)]
    packets = sb.device_packets("scale", ids, SECRET, exclusive={ids[1]})
    before = sb.rss_kib(pid)
    started = time.perf_counter()
    held = loop.run_until_complete(sb.hold(port, packets))
    seconds = time.perf_counter() - started
    accepted = sum(1 for _, _, connack in held.values() if connack == sb.CONNACK_ACCEPTED)
    time.sleep(1)  # the broker's status batch and the connection log settle
    per_connection = (sb.rss_kib(pid) - before) / HELD
    extra = {"devices": HELD}
    rows += [
        {"benchmark": "many connected", "metric": "accepted", "value": accepted, "unit": "",
         **extra, "of": HELD},
        {"benchmark": "many connected", "metric": "time to connect all", "value": seconds,
         "unit": "s", **extra},
        {"benchmark": "many connected", "metric": "broker memory per connection",
         "value": per_connection, "unit": "KiB", **extra},
    ]
    # A takeover: a newcomer for device 0; its old connection must close.
    newcomer = loop.run_until_complete(sb.open_one(port, packets[ids[0]]))
    took = loop.run_until_complete(sb.closed_within(held[ids[0]][0], 5))
    # An exclusive holder (device 1): a newcomer is refused with a CONNACK.
    started = time.perf_counter()
    refused = loop.run_until_complete(sb.open_one(port, packets[ids[1]], timeout=5))
    refused_s = time.perf_counter() - started if refused[2] and refused[2] != sb.CONNACK_ACCEPTED else None
    # A disable (device 2), as any change in the registry: its connection must close.
    Device.objects.filter(product=product, device_id=ids[2]).update(enabled=False)
    disabled = loop.run_until_complete(sb.closed_within(held[ids[2]][0], 5))
    for name, value in (("takeover", took), ("exclusive refusal", refused_s), ("disable", disabled)):
        rows.append({"benchmark": f"many connected, {name}", "metric": "takes effect after",
                     "value": value, "unit": "s", **extra, "within_2_s": value is not None and value < 2})
    newcomer[1].close()
    refused[1].close()
    sb.close_all(held)
    return rows


def storm_rows(port, loop):
    ids = [f"storm-{i:06d}" for i in range(STORM)]
    packets = list(sb.device_packets("scale", ids, SECRET, keepalive=60).values())
    answered, accepted, dropped, seconds = loop.run_until_complete(sb.storm(port, packets, 1.0))
    extra = {"devices": STORM, "answered": answered, "accepted": accepted, "dropped": dropped}
    return [
        {"benchmark": "reconnect storm", "metric": "answered with a CONNACK", "value": answered,
         "unit": "", **extra},
        {"benchmark": "reconnect storm", "metric": "dropped", "value": dropped, "unit": "", **extra},
        {"benchmark": "reconnect storm", "metric": "time to the last CONNACK", "value": seconds,
         "unit": "s", **extra},
    ]


def run():
    _raise_file_limit(2 * (HELD + STORM) + 1000)
    set_up_django("bench-scale-")
    from devices.models import Device, Product

    product = Product.objects.create(product_id="scale", name="Scale")
    Device.objects.bulk_create(
        [Device(product=product, device_id=f"held-{i:06d}", device_secret=SECRET)
         for i in range(HELD)]
        + [Device(product=product, device_id=f"storm-{i:06d}", device_secret=SECRET)
           for i in range(STORM)], batch_size=2000)
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runbroker", "--host", "127.0.0.1", "--port",
         str(port)], cwd=ROOT, env=production_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    loop = asyncio.new_event_loop()
    try:
        wait_listening(port, broker)
        rows = broker_rows(port, broker.pid, loop) + storm_rows(port, loop)
    finally:
        loop.close()
        stop(broker)
    if REGISTRY:
        from bench import scale_registry

        rows += scale_registry.rows(REGISTRY)
    return rows
