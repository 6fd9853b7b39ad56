"""Connection checks: how long a person waits, and how many checks one worker completes.

One run, 127.0.0.1 (the broker and the workers with the production settings, PORTAL_DEBUG=0),
one embedded broker (``manage.py runbroker``, plain TCP, securemode=3) and
one ``manage.py db_worker``, on a fresh SQLite database:

* ``enqueue → result``: one check at a time, from ``request_check`` (the row and the task are
  committed) until the row says succeeded, with the poll interval ``make run`` gives its worker
  (``--interval 0.2``) and with db_worker's default (1 s).
* ``one worker``: CHECKS checks queued at once; checks per second until the last one finished.
* ``fleet run, one worker``: ``manage.py checkconnections`` over FLEET_DEVICES devices of one
  product with one ``runworker`` (as ``make run`` starts it): checks per second from the
  command's start until it exits (queueing, running, waiting for the last result).
* ``run_connection_check loop``: the same check (paho connect, CONNACK, QoS 1 publish, PUBACK,
  disconnect) in a loop in this process, without the queue and the database: what the worker
  adds is the difference.
* ``bare paho connect loop``: paho connect → CONNACK → disconnect, nothing else.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from bench.harness import ROOT, free_port, production_env, set_up_django, stop, wait_listening

CHECKS = int(os.environ.get("BENCH_CHECKS", "200"))
SAMPLES = int(os.environ.get("BENCH_CHECK_SAMPLES", "15"))
DEVICES = 20
FLEET_DEVICES = int(os.environ.get("BENCH_FLEET_DEVICES", "1000"))


def _start_worker(interval):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "db_worker", "--no-reload",
         "--interval", str(interval), "-v", "0"],
        cwd=ROOT, env=production_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)  # Django start-up and the worker's random start-up delay (< 1 s)
    return process


def _wait_done(checks, timeout=120):
    from devices.models import ConnectionCheck

    ids = [c.pk for c in checks]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ConnectionCheck.objects.filter(pk__in=ids, status__in=["succeeded", "failed"])
        if done.count() == len(ids):
            return list(done)
        time.sleep(0.01)
    raise RuntimeError("checks did not finish: is the worker running?")


def _latency_rows(label, seconds, extra):
    seconds = sorted(seconds)
    p95 = seconds[max(0, int(len(seconds) * 0.95) - 1)]
    return [
        {"benchmark": label, "metric": "enqueue→result p50", "unit": "ms",
         "value": statistics.median(seconds) * 1000, **extra},
        {"benchmark": label, "metric": "enqueue→result p95", "unit": "ms",
         "value": p95 * 1000, **extra},
    ]


def run():
    broker_port = free_port()
    set_up_django("bench-checks-", PORTAL_MQTT_HOST="127.0.0.1",
                  PORTAL_MQTT_PORT=str(broker_port), PORTAL_MQTT_TLS_PORT="")
    import paho.mqtt.client as mqtt
    from django.db.models import Count, Max, Min
    from paho.mqtt.enums import CallbackAPIVersion

    from devices.connection_check import Outcome, run_connection_check
    from devices.models import ConnectionCheck, Device, Product
    from devices.options import ConnectionOptions
    from devices.tasks import CHECK_TOPIC, request_check

    product = Product.objects.create(product_id="bench", name="Benchmark")
    devices = [Device.objects.create(product=product, device_id=f"dev-{i}") for i in range(DEVICES)]

    broker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runbroker", "--host", "127.0.0.1",
         "--port", str(broker_port)],
        cwd=ROOT, env=production_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_listening(broker_port, broker)

        # How long a person waits: one check at a time.
        for interval in (0.2, 1.0):
            worker = _start_worker(interval)
            try:
                waits = []
                for index in range(SAMPLES):
                    started = time.perf_counter()
                    check = request_check(devices[index % DEVICES])
                    (done,) = _wait_done([check])
                    waits.append(time.perf_counter() - started)
                    assert done.outcome == Outcome.ACCEPTED, (done.outcome, done.reason)
                    time.sleep(0.137 * (index % 7))  # arrive at different points of the poll
                rows += _latency_rows(f"check, worker --interval {interval:g}", waits,
                                      {"samples": SAMPLES})
            finally:
                stop(worker)

        # Throughput of one worker.
        worker = _start_worker(0.1)
        try:
            started = time.perf_counter()
            checks = [request_check(devices[i % DEVICES]) for i in range(CHECKS)]
            queued = time.perf_counter() - started
            done = _wait_done(checks, timeout=600)
            elapsed = time.perf_counter() - started
        finally:
            stop(worker)
        failures = sum(1 for c in done if c.outcome != Outcome.ACCEPTED)
        rows.append({"benchmark": "one db_worker", "metric": "checks per second", "unit": "1/s",
                     "value": CHECKS / elapsed, "checks": CHECKS, "failures": failures,
                     "enqueue_seconds": queued})

        # A fleet run: checkconnections over a product of FLEET_DEVICES devices, one runworker.
        fleet = Product.objects.create(product_id="fleet", name="Fleet")
        Device.objects.bulk_create(
            [Device(product=fleet, device_id=f"fleet-{i:06d}") for i in range(FLEET_DEVICES)],
            batch_size=2000)
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runworker", "--no-reload",
             "--interval", "0.2", "-v", "0"],
            cwd=ROOT, env=production_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.5)
        try:
            started = time.perf_counter()
            command = subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "checkconnections", "--product", "fleet"],
                cwd=ROOT, env=production_env(), capture_output=True, text=True)
            elapsed = time.perf_counter() - started
        finally:
            stop(worker)
        summary = [line for line in command.stdout.splitlines() if line.startswith("Summary")]
        rows.append({"benchmark": "fleet run, one worker", "metric": "checks per second",
                     "unit": "1/s", "value": FLEET_DEVICES / elapsed, "checks": FLEET_DEVICES,
                     "seconds": elapsed, "summary": summary[0] if summary else command.stderr[-300:],
                     "exit_status": command.returncode})
        # The worker's own rate during the run, from the checks' stored times: the first check
        # queued to the last result stored (without the command's interpreter and Django start
        # before it queues anything, or its last poll after the last result).
        span = ConnectionCheck.objects.filter(device__product=fleet).aggregate(
            first=Min("queued_at"), last=Max("finished_at"), done=Count("finished_at"))
        window = (span["last"] - span["first"]).total_seconds()
        rows.append({"benchmark": "fleet run, one worker, first queued to last result",
                     "metric": "checks per second", "unit": "1/s", "value": span["done"] / window,
                     "checks": span["done"], "seconds": window})

        # The same check without the queue, and a bare paho connect loop, on the same broker.
        params = [d.connection_params(ConnectionOptions(securemode=3, timestamp=None))
                  for d in devices]
        started = time.perf_counter()
        failures = 0
        for i in range(CHECKS):
            p = params[i % DEVICES]
            result = run_connection_check(
                p["host"], p["port"], p["mqttClientId"], p["mqttUsername"], p["mqttPassword"],
                topic=CHECK_TOPIC.format(product_id="bench", device_id=p["deviceId"]),
            )
            failures += not result.succeeded
        rows.append({"benchmark": "run_connection_check loop", "metric": "checks per second",
                     "unit": "1/s", "value": CHECKS / (time.perf_counter() - started),
                     "checks": CHECKS, "failures": failures})

        started = time.perf_counter()
        failures = 0
        for i in range(CHECKS):
            p = params[i % DEVICES]
            connack = []
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=p["mqttClientId"],
                                 userdata=connack)
            client.username_pw_set(p["mqttUsername"], p["mqttPassword"])
            client.on_connect = lambda c, userdata, f, reason, props: userdata.append(reason.value)
            client.connect(p["host"], p["port"])
            deadline = time.monotonic() + 5
            while not connack and time.monotonic() < deadline:
                client.loop(timeout=0.01)
            failures += connack != [0]
            client.disconnect()
            client.loop(timeout=0.01)
        rows.append({"benchmark": "bare paho connect loop", "metric": "connects per second",
                     "unit": "1/s", "value": CHECKS / (time.perf_counter() - started),
                     "connects": CHECKS, "failures": failures})
    finally:
        stop(broker)
    return rows
