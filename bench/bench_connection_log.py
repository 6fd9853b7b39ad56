"""What the connection log costs under a storm of refusals: the same load with the log on and
off, in one run (RATIOS in bench/run.py: the goal is within 10%).

* ``embedded broker, refusal storm, log on|off``: ``manage.py runbroker`` (production cache),
  raw MQTT 3.1.1 CONNECTs with a wrong password from a few threads, each its own known device
  (so every refusal is a bad_signature the log diagnoses when it writes a new row), CONNACK 0x04.
* ``embedded broker, accepted connects, log on|off``: the same with the right password (each
  connection gives a connected and a disconnected event).
* ``/mqtt/auth refusal storm, log on|off``: the EMQX hook with a wrong password, called
  in-process through Django's test client (no HTTP server in the measurement), from a few threads.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from bench.harness import ROOT, connect_packet, free_port, set_up_django, stop, wait_listening

CONNECTIONS = int(os.environ.get("BENCH_LOG_CONNECTIONS", "4000"))
REQUESTS = int(os.environ.get("BENCH_LOG_REQUESTS", "4000"))
THREADS = int(os.environ.get("BENCH_LOG_THREADS", "4"))
SECRET = "bench-secret-0123456789abcdefABCD"
TOKEN = "bench-hook-token"


def storm(port, packets, expected, connections=CONNECTIONS):
    """CONNECT → CONNACK (→ DISCONNECT when accepted) cycles over threads; (per second, bad)."""
    per_thread = connections // len(packets)
    bad = []

    def worker(packet):
        wrong = 0
        for _ in range(per_thread):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(packet)
                    connack = b""
                    while len(connack) < 4:
                        chunk = sock.recv(4 - len(connack))
                        if not chunk:
                            break
                        connack += chunk
                    if connack != expected:
                        wrong += 1
                    elif expected.endswith(b"\x00"):
                        sock.sendall(b"\xe0\x00")
            except OSError:
                wrong += 1
        bad.append(wrong)

    threads = [threading.Thread(target=worker, args=(p,)) for p in packets]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_thread * len(packets) / (time.perf_counter() - started), sum(bad)


# Each mode runs REPEATS times, on and off alternating (off first, then on first), and the best
# run counts: on a shared machine the noise of one run is larger than what is measured.
REPEATS = int(os.environ.get("BENCH_LOG_REPEATS", "3"))


def _orders():
    return [("off", "on") if repeat % 2 == 0 else ("on", "off") for repeat in range(REPEATS)]


def broker_rows(fields):
    rows = []
    for label, index, expected in (("refusal storm", 2, b"\x20\x02\x00\x04"),
                                   ("accepted connects", 1, b"\x20\x02\x00\x00")):
        packets = [connect_packet(*f[0], f[index]) for f in fields]
        best = {}
        for order in _orders():
            for log in order:
                port = free_port()
                env = {**os.environ, "PORTAL_CONNECTION_LOG": "1" if log == "on" else "0"}
                process = subprocess_broker(port, env)
                try:
                    wait_listening(port, process)
                    storm(port, packets[:1], expected, 20)  # warm-up
                    rate, bad = storm(port, packets, expected)
                finally:
                    stop(process)
                if bad:
                    raise RuntimeError(f"{label}, log {log}: {bad} unexpected CONNACKs")
                if rate > best.get(log, (0, 0))[0]:
                    best[log] = (rate, bad)
        for log in ("on", "off"):
            rows.append({"benchmark": f"embedded broker, {label}, log {log}",
                         "metric": "connects per second", "value": best[log][0], "unit": "1/s",
                         "connections": CONNECTIONS, "threads": THREADS, "failures": best[log][1],
                         "repeats": REPEATS})
    return rows


def subprocess_broker(port, env):
    import subprocess

    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runbroker", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def auth_rows(bodies):
    from django.test import Client, override_settings

    from devices import connection_log

    best = {}
    for log in [log for order in _orders() for log in order]:
        with override_settings(CONNECTION_LOG=log == "on", BROKER_HOOK_TOKEN=TOKEN,
                               ALLOWED_HOSTS=["testserver"]):
            per_thread = REQUESTS // len(bodies)
            failures = []

            def worker(body, per_thread=per_thread, failures=failures):
                client = Client()
                wrong = 0
                for _ in range(per_thread):
                    response = client.post("/mqtt/auth", data=body, content_type="application/json",
                                           HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
                    if response.status_code != 200 or response.json()["result"] != "deny":
                        wrong += 1
                failures.append(wrong)

            worker(bodies[0])  # warm-up
            threads = [threading.Thread(target=worker, args=(b,)) for b in bodies]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = per_thread * len(bodies) / (time.perf_counter() - started)
            connection_log.flush()
        if sum(failures):
            raise RuntimeError(f"/mqtt/auth answered {sum(failures)} requests wrongly")
        if rate > best.get(log, (0, 0))[0]:
            best[log] = (rate, sum(failures[1:]))
    return [{"benchmark": f"/mqtt/auth refusal storm, log {log}", "metric": "requests per second",
             "value": best[log][0], "unit": "1/s", "requests": REQUESTS, "threads": THREADS,
             "failures": best[log][1], "repeats": REPEATS} for log in ("on", "off")]


def run():
    set_up_django("bench-connlog-")
    from devices import signing
    from devices.models import ConnectionEvent, Device, Product

    product = Product.objects.create(product_id="bench", name="Benchmark")
    fields, bodies = [], []
    for index in range(THREADS):
        device = Device.objects.create(product=product, device_id=f"dev-{index}",
                                       device_secret=SECRET)
        rendered = signing.render(product.product_id, device.device_id, SECRET,
                                  client_id=f"c{index}", securemode=3, signmethod="hmacsha256",
                                  timestamp=signing.now_ms())
        wrong = signing.sign("another-secret", "x", "hmacsha256")
        fields.append(((rendered.mqtt_client_id, rendered.mqtt_username),
                       rendered.mqtt_password, wrong))
        bodies.append(json.dumps({"clientid": rendered.mqtt_client_id,
                                  "username": rendered.mqtt_username, "password": wrong,
                                  "peerhost": "192.0.2.10", "transport": "tcp"}))
    rows = broker_rows(fields) + auth_rows(bodies)
    rows.append({"benchmark": "connection log rows after the runs", "metric": "rows",
                 "value": ConnectionEvent.objects.count(), "unit": ""})
    return rows
