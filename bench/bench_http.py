"""Requests per second of the portal's machine-facing HTTP paths against a bare Django view.

One gunicorn, started with exactly the command ``make run`` uses (``runportal``'s), on
127.0.0.1, with the settings ``bench.http_settings.py`` (the portal's production settings,
``PORTAL_DEBUG=0``, plus ``/bench/bare``: a ``JsonResponse`` of the mqtt-params answer's size
through the same middleware) on a fresh SQLite database. Load comes from
wrk (Debian's ``wrk``; ``make bench`` installs it when missing), one thread, CONNECTIONS
connections, SECONDS seconds per target, ROUNDS alternating rounds (best round kept, since the
machine is shared). Targets:

* ``bare Django view``: GET /bench/bare.
* ``/mqtt/auth, one device``: EMQX's authentication hook, the same accepted CONNECT again and
  again (the device is in the verifier's ≤ 1 s cache).
* ``/mqtt/auth, reconnect storm``: STORM_DEVICES distinct devices in turn, so that a device comes
  round again only after the cache has forgotten it (every look-up is a miss, as after an EMQX
  restart); each accepted CONNECT is recorded (``BrokerSession``), as always.
* ``mqtt-params, API token``: GET .../mqtt-params with ``Authorization: Bearer``.
* ``bare Django view, the hook's POST``: the one-device body POSTed to /bench/bare, which
  reads and parses it as the hooks do and answers: what a POST with its JSON body costs over a
  GET, so about the most any ``/mqtt/auth`` ratio could reach.

Each target also gets gunicorn's CPU time per 1000 requests (master and workers, the lowest
round), steadier than the rate when other work shares the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.harness import (
    ROOT,
    cpu_seconds,
    free_port,
    production_env,
    set_up_django,
    stop,
    wait_listening,
)

SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "2"))
CONNECTIONS = int(os.environ.get("BENCH_HTTP_CONNECTIONS", "8"))
STORM_DEVICES = int(os.environ.get("BENCH_HTTP_STORM_DEVICES", "10000"))
HOOK_TOKEN = "bench-hook-token-0123456789"
PROFILE = os.environ.get("BENCH_HTTP_PROFILE", "")
SECRET = "bench-secret-0123456789abcdefABCD"

LUA_POST = """
local bodies = {%s}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n %% #bodies) + 1])
end
"""
LUA_TOKEN = """
wrk.headers["Authorization"] = "Bearer %s"
"""


def _lua_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _auth_body(device_id):
    from devices import signing

    fields = signing.render("bench", device_id, SECRET, client_id=device_id, securemode=3,
                            signmethod="hmacsha256", timestamp=None)
    return json.dumps({"clientid": fields.mqtt_client_id, "username": fields.mqtt_username,
                       "password": fields.mqtt_password, "peerhost": "127.0.0.1",
                       "transport": "tcp"})


def _server_cpu(server):
    """CPU seconds of gunicorn's master and workers so far."""
    workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                             text=True).stdout.split()
    return cpu_seconds(server.pid) + sum(cpu_seconds(int(pid)) for pid in workers)


def _wrk(url, script=None, server=None):
    before = _server_cpu(server) if server else 0.0
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS:g}s", "--latency"]
    if script:
        command += ["-s", script]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    cpu = _server_cpu(server) - before if server else None
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}
    return {"rate": rate, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else "",
            "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
            "cpu_ms_per_1000": cpu * 1e6 / requests if cpu is not None and requests else None}


def _post(url, body, token):
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _profile(server, target):
    """py-spy (pip install py-spy) records each gunicorn worker while wrk loads ``target``."""
    name, url, script = target
    workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                             text=True).stdout.split()
    spies = [subprocess.Popen(["py-spy", "record", "-p", pid, "-d", str(int(SECONDS)), "-f",
                               "raw", "-o", f"/tmp/bench-http-profile-{pid}.txt", "--nonblocking"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for pid in workers]
    _wrk(url, script)
    for spy in spies:
        spy.wait()
    print("profiles:", " ".join(f"/tmp/bench-http-profile-{pid}.txt" for pid in workers),
          file=sys.stderr)


def run():
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; make bench installs it)")
    set_up_django("bench-http-", PORTAL_BROKER_HOOK_TOKEN=HOOK_TOKEN)
    from django.contrib.auth.models import Permission, User

    from devices.management.commands.runportal import Command as RunPortal
    from devices.models import ApiToken, Device, Product

    product = Product.objects.create(product_id="bench", name="Benchmark")
    ids = [f"dev-{i:06d}" for i in range(STORM_DEVICES)]
    Device.objects.bulk_create(
        [Device(product=product, device_id=d, device_secret=SECRET) for d in ids], batch_size=2000)
    user = User.objects.create_user("bench-owner", password="bench-owner-password-1")
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_device", "view_device_secret"]))
    _, token = ApiToken.issue(user, "bench")

    scripts = tempfile.mkdtemp(prefix="bench-http-wrk-")
    one = Path(scripts, "one.lua")
    one.write_text(LUA_POST % (_lua_string(_auth_body(ids[0])), HOOK_TOKEN))
    storm = Path(scripts, "storm.lua")
    storm.write_text(LUA_POST % (",".join(_lua_string(_auth_body(d)) for d in ids), HOOK_TOKEN))
    bearer = Path(scripts, "token.lua")
    bearer.write_text(LUA_TOKEN % token)

    port = free_port()
    bind = f"127.0.0.1:{port}"
    (_, command), = [p for p in RunPortal().processes(bind, "127.0.0.1") if p[0] == "web"]
    env = production_env(DJANGO_SETTINGS_MODULE="bench.http_settings")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://{bind}"
    params_url = f"{base}/api/v1/products/bench/devices/{ids[0]}/mqtt-params"
    targets = [
        ("bare Django view", f"{base}/bench/bare", None),
        ("/mqtt/auth, one device", f"{base}/mqtt/auth", str(one)),
        ("/mqtt/auth, reconnect storm", f"{base}/mqtt/auth", str(storm)),
        ("mqtt-params, API token", params_url, str(bearer)),
        # The hook's own request (POST, its JSON body, the bearer token) to the bare view: what
        # a hook that did nothing would reach, the ceiling of the /mqtt/auth ratios.
        ("bare Django view, the hook's POST", f"{base}/bench/bare", str(one)),
    ]
    best = {}
    try:
        wait_listening(port, server)
        # Sanity: each target answers what it should (an accepted CONNECT, the parameters).
        assert _post(f"{base}/mqtt/auth", _auth_body(ids[1]), HOOK_TOKEN)["result"] == "allow"
        status, params = _get(params_url, token)
        assert status == 200 and params["mqttPassword"], status
        for _name, url, script in targets:  # warm-up: imports, first connections
            subprocess.run(["wrk", "-t1", "-c2", "-d1s", *(["-s", script] if script else []), url],
                           capture_output=True, check=True)
        if PROFILE:  # BENCH_HTTP_PROFILE=<target name start>: py-spy over gunicorn's workers
            _profile(server, [t for t in targets if t[0].startswith(PROFILE)][0])
        for _ in range(ROUNDS):
            for name, url, script in targets:
                result = _wrk(url, script, server)
                if name not in best or result["rate"] > best[name]["rate"]:
                    best[name] = {**result, "cpu": best.get(name, {}).get("cpu", [])}
                best[name]["cpu"].append(result["cpu_ms_per_1000"])
                time.sleep(0.5)
    finally:
        stop(server)
    rows = []
    for name, _, _ in targets:
        result = best[name]
        extra = {"load": "wrk", "distinct_devices": STORM_DEVICES if "storm" in name else 1, "connections": CONNECTIONS, "seconds": SECONDS, "rounds": ROUNDS,
                 "non_2xx": result["non_2xx"], "socket_errors": result["socket_errors"],
                 "gunicorn": " ".join(command[1:])}
        rows.append({"benchmark": name, "metric": "requests per second", "unit": "1/s",
                     "value": result["rate"], **extra})
        rows.append({"benchmark": name, "metric": "latency p99", "unit": "ms",
                     "value": result["p99_ms"], **extra})
        # gunicorn's CPU time (master and workers) per 1000 requests, the lowest round's: what
        # a request costs the server, steadier than the rate on a shared machine.
        rows.append({"benchmark": name, "metric": "server CPU ms per 1000 requests", "unit": "ms",
                     "value": min((c for c in result["cpu"] if c is not None), default=None),
                     **extra})
    return rows


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT)]
    print(json.dumps(run(), indent=1))
