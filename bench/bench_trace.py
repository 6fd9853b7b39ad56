"""What the message trace costs an untraced device: publishes per second through the embedded
broker with the trace feature on (and a trace of another device running) and switched off
(``PORTAL_MESSAGE_TRACE=0``, the broker as before the feature), in one run (RATIOS in
bench/run.py: the goal is ≥ 0.95).

One device, subscribed to its own space, publishes ``BENCH_TRACE_MESSAGES`` QoS 1 messages and
receives each back: both the publish path and the delivery path.

On a shared 2-core machine one run's noise is larger than what is measured, so (as
bench_connection_log.py does) each side runs ``BENCH_TRACE_REPEATS`` times, on and off
alternating (off first, then on first), each in a fresh broker after a warm-up burst, and the
best run of each side counts. Every run's figure, both bests, their ratio and the median of the
adjacent on/off pairs' ratios are printed (on stderr, so ``bench/run.py`` shows them) and kept in
the rows.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time

from bench.harness import ROOT, free_port, set_up_django, stop, wait_listening

MESSAGES = int(os.environ.get("BENCH_TRACE_MESSAGES", "3000"))
REPEATS = int(os.environ.get("BENCH_TRACE_REPEATS", "5"))
WARM_UP = 300
SECRET = "bench-secret-0123456789abcdefABCD"


def broker(port, trace_on):
    import subprocess

    env = {**os.environ, "PORTAL_MESSAGE_TRACE": "1" if trace_on else "0"}
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runbroker", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def cpu_seconds(pid) -> float:
    """The process's user + system CPU time (Linux /proc; 0 elsewhere)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish_rate(port, fields, topic, pid, bursts=(WARM_UP, MESSAGES)):
    """(rate, the broker's CPU ms per 1000 messages) of the last burst (the ones before warm
    the broker up: its database connection, its auth path, Python's caches), each burst waiting
    for all of its messages to come back. CPU time is steadier than the rate on a shared
    machine: other people's load takes the broker's turns, not its work."""
    import paho.mqtt.client as mqtt

    received = threading.Event()
    count = [0]
    wanted = [0]
    connected = threading.Event()

    def on_message(_c, _u, _m):
        count[0] += 1
        if count[0] >= wanted[0]:
            received.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=fields[0])
    client.username_pw_set(fields[1], fields[2])
    client.max_inflight_messages_set(50)
    client.on_message = on_message
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        connected.wait(10)
        client.subscribe(topic + "/#", qos=1)
        time.sleep(0.3)
        for burst in bursts:
            received.clear()
            count[0], wanted[0] = 0, burst
            start, cpu = time.perf_counter(), cpu_seconds(pid)
            for number in range(burst):
                client.publish(topic + "/up", b'{"n": %d}' % number, qos=1)
            if not received.wait(120):
                raise RuntimeError(f"only {count[0]} of {burst} messages came back")
            rate = burst / (time.perf_counter() - start)
            cpu_ms = (cpu_seconds(pid) - cpu) * 1e6 / burst
        return rate, cpu_ms
    finally:
        client.disconnect()
        client.loop_stop()


def run():
    set_up_django("bench-trace-")
    from devices import message_trace, signing
    from devices.models import Device, Product, TraceMessage

    product = Product.objects.create(product_id="bench", name="Benchmark")
    device = Device.objects.create(product=product, device_id="untraced", device_secret=SECRET)
    other = Device.objects.create(product=product, device_id="traced", device_secret=SECRET)
    message_trace.start_trace(other, None, 60)  # a trace runs, of another device
    rendered = signing.render(product.product_id, device.device_id, SECRET, client_id="b1",
                              securemode=3, signmethod="hmacsha256", timestamp=signing.now_ms())
    fields = (rendered.mqtt_client_id, rendered.mqtt_username, rendered.mqtt_password)
    topic = f"/{product.product_id}/{device.device_id}"
    runs = {"on": [], "off": []}
    cpu = {"on": [], "off": []}
    pairs = []
    for repeat in range(REPEATS):
        order = ("off", "on") if repeat % 2 == 0 else ("on", "off")
        for mode in order:
            port = free_port()
            process = broker(port, mode == "on")
            try:
                wait_listening(port, process)
                rate, cpu_ms = publish_rate(port, fields, topic, process.pid)
            finally:
                stop(process)
            runs[mode].append(rate)
            cpu[mode].append(cpu_ms)
            print(f"bench_trace: repeat {repeat + 1}/{REPEATS}, trace {mode}: {rate:,.0f}/s, "
                  f"broker CPU {cpu_ms:,.0f} ms per 1000", file=sys.stderr, flush=True)
        pairs.append(runs["on"][-1] / runs["off"][-1])
    best = {mode: max(rates) for mode, rates in runs.items()}
    paired = statistics.median(pairs)
    print(f"bench_trace: best of {REPEATS}: on {best['on']:,.0f}/s, off {best['off']:,.0f}/s, "
          f"ratio {best['on'] / best['off']:.3f}; median of the paired ratios {paired:.3f} "
          f"(each {', '.join(f'{p:.3f}' for p in pairs)}); broker CPU per 1000, least of "
          f"{REPEATS}: on {min(cpu['on']):,.0f} ms, off {min(cpu['off']):,.0f} ms",
          file=sys.stderr, flush=True)
    untraced_rows = TraceMessage.objects.filter(trace__device=device).count()
    if untraced_rows:
        raise RuntimeError(f"the untraced device has {untraced_rows} trace rows")
    rows = [{"benchmark": f"embedded broker, untraced device, trace {mode}",
             "metric": "publishes per second", "value": best[mode], "unit": "1/s",
             "messages": MESSAGES, "repeats": REPEATS, "runs": [round(r, 1) for r in runs[mode]]}
            for mode in ("on", "off")]
    rows += [{"benchmark": f"embedded broker, untraced device, trace {mode}",
              "metric": "broker CPU ms per 1000 messages", "value": min(cpu[mode]), "unit": "ms",
              "runs": [round(c, 1) for c in cpu[mode]]} for mode in ("on", "off")]
    rows.append({"benchmark": "embedded broker, untraced device, trace on / off, paired runs",
                 "metric": "median ratio", "value": paired, "unit": "x",
                 "pairs": [round(p, 3) for p in pairs]})
    return rows
