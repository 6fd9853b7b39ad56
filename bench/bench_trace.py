"""What the message trace costs an untraced device: publishes per second through the embedded
broker with the trace feature on (and a trace of another device running) and switched off
(``PORTAL_MESSAGE_TRACE=0``, the broker as before the feature), in one run (RATIOS in
bench/run.py: the goal is ≥ 0.95).

One device, subscribed to its own space, publishes ``BENCH_TRACE_MESSAGES`` QoS 1 messages and
receives each back: both the publish path and the delivery path. Best of alternating repeats.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from bench.harness import ROOT, free_port, set_up_django, stop, wait_listening

MESSAGES = int(os.environ.get("BENCH_TRACE_MESSAGES", "3000"))
REPEATS = int(os.environ.get("BENCH_TRACE_REPEATS", "3"))
SECRET = "bench-secret-0123456789abcdefABCD"


def broker(port, trace_on):
    import subprocess

    env = {**os.environ, "PORTAL_MESSAGE_TRACE": "1" if trace_on else "0"}
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runbroker", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def publish_rate(port, fields, topic):
    import paho.mqtt.client as mqtt

    received = threading.Event()
    count = [0]
    connected = threading.Event()

    def on_message(_c, _u, _m):
        count[0] += 1
        if count[0] >= MESSAGES:
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
        start = time.perf_counter()
        for number in range(MESSAGES):
            client.publish(topic + "/up", b'{"n": %d}' % number, qos=1)
        if not received.wait(120):
            raise RuntimeError(f"only {count[0]} of {MESSAGES} messages came back")
        return MESSAGES / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()


def run():
    set_up_django("bench-trace-")
    from devices import message_trace, signing
    from devices.models import Device, Product

    product = Product.objects.create(product_id="bench", name="Benchmark")
    device = Device.objects.create(product=product, device_id="untraced", device_secret=SECRET)
    other = Device.objects.create(product=product, device_id="traced", device_secret=SECRET)
    message_trace.start_trace(other, None, 60)  # a trace runs, of another device
    rendered = signing.render(product.product_id, device.device_id, SECRET, client_id="b1",
                              securemode=3, signmethod="hmacsha256", timestamp=signing.now_ms())
    fields = (rendered.mqtt_client_id, rendered.mqtt_username, rendered.mqtt_password)
    topic = f"/{product.product_id}/{device.device_id}"
    best = {}
    for repeat in range(REPEATS):
        for mode in (("off", "on") if repeat % 2 == 0 else ("on", "off")):
            port = free_port()
            process = broker(port, mode == "on")
            try:
                wait_listening(port, process)
                rate = publish_rate(port, fields, topic)
            finally:
                stop(process)
            best[mode] = max(best.get(mode, 0), rate)
    return [{"benchmark": f"embedded broker, untraced device, trace {mode}",
             "metric": "publishes per second", "value": best[mode], "unit": "1/s",
             "messages": MESSAGES, "repeats": REPEATS} for mode in ("on", "off")]
