"""Run the benchmarks (bench/bench_*.py), print a table and write bench/results.json.

Each module has ``run() -> list[dict]``; every row has ``benchmark``, ``metric``, ``value`` and
``unit`` (more keys are kept in the JSON). Each module runs in its own Python process, so that
one module's Django settings or event loop never leak into another's.

    python bench/run.py              # every bench/bench_*.py
    python bench/run.py broker       # only bench/bench_broker.py
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results.json"
MARKER = "BENCH-RESULT "
# Speed is judged as a ratio against a baseline measured in the same run on the same machine:
# (benchmark, metric) over (baseline benchmark, metric).
RATIOS = [
    (("portal broker", "connects per second"), ("plain amqtt (anonymous)", "connects per second")),
    (("portal broker, cache off", "connects per second"),
     ("plain amqtt (anonymous)", "connects per second")),
    # The same as the broker's CPU time per connect, steadier on a shared machine (≤ 1.11).
    (("portal broker", "broker CPU ms per 1000 connects"),
     ("plain amqtt (anonymous)", "broker CPU ms per 1000 connects")),
    (("one db_worker", "checks per second"), ("bare paho connect loop", "connects per second")),
    (("fleet run, one worker", "checks per second"),
     ("bare paho connect loop", "connects per second")),
    (("fleet run, one worker, first queued to last result", "checks per second"),
     ("bare paho connect loop", "connects per second")),
    (("run_connection_check loop", "checks per second"),
     ("bare paho connect loop", "connects per second")),
    # The HTTP paths (bench_http.py) over a bare JsonResponse view on the same gunicorn.
    (("/mqtt/auth, reconnect storm", "requests per second"),
     ("bare Django view", "requests per second")),
    (("/mqtt/auth, one device", "requests per second"), ("bare Django view", "requests per second")),
    (("mqtt-params, API token", "requests per second"), ("bare Django view", "requests per second")),
    # The ceiling of the /mqtt/auth ratios: the hook's POST answered by the bare view; and the
    # one-device hook against that.
    (("bare Django view, the hook's POST", "requests per second"),
     ("bare Django view", "requests per second")),
    (("/mqtt/auth, one device", "requests per second"),
     ("bare Django view, the hook's POST", "requests per second")),
    # The same as gunicorn's CPU time per request, steadier on a shared machine (the rate's
    # goal g is a CPU ratio of at most 1/g: 0.9 → 1.11, 0.6 → 1.67, 0.5 → 2).
    (("/mqtt/auth, reconnect storm", "server CPU ms per 1000 requests"),
     ("bare Django view", "server CPU ms per 1000 requests")),
    (("/mqtt/auth, one device", "server CPU ms per 1000 requests"),
     ("bare Django view", "server CPU ms per 1000 requests")),
    (("mqtt-params, API token", "server CPU ms per 1000 requests"),
     ("bare Django view", "server CPU ms per 1000 requests")),
    # The connection log's cost (bench_connection_log.py): log on over log off, goal ≥ 0.90.
    (("embedded broker, refusal storm, log on", "connects per second"),
     ("embedded broker, refusal storm, log off", "connects per second")),
    (("embedded broker, accepted connects, log on", "connects per second"),
     ("embedded broker, accepted connects, log off", "connects per second")),
    (("/mqtt/auth refusal storm, log on", "requests per second"),
     ("/mqtt/auth refusal storm, log off", "requests per second")),
    # The message trace's cost to an untraced device (bench_trace.py), goal ≥ 0.95.
    (("embedded broker, untraced device, trace on", "publishes per second"),
     ("embedded broker, untraced device, trace off", "publishes per second")),
    # The same in the broker's CPU time per message, steadier on a shared machine (≤ 1.05).
    (("embedded broker, untraced device, trace on", "broker CPU ms per 1000 messages"),
     ("embedded broker, untraced device, trace off", "broker CPU ms per 1000 messages")),
]


def modules(selected):
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    if selected:
        wanted = {s if s.startswith("bench_") else f"bench_{s}" for s in selected}
        unknown = wanted - set(names)
        if unknown:
            sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    return names


def run_one(name):
    """In the child: import and run one module, print its rows as one marked JSON line."""
    sys.path[:0] = [str(BENCH_DIR), str(ROOT)]
    rows = importlib.import_module(name).run()
    print(MARKER + json.dumps(rows), flush=True)


def run_isolated(name):
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", name],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith(MARKER)]
    if child.returncode != 0 or not lines:
        print(child.stdout[-3000:], file=sys.stderr)
        return [{"benchmark": name, "metric": "error", "value": None, "unit": "",
                 "error": f"exited with {child.returncode}"}]
    return json.loads(lines[-1][len(MARKER):])


def ratio_rows(rows):
    """Each RATIOS pair whose two sides were measured in this run, as a row of its own."""
    values = {(r.get("benchmark"), r.get("metric")): r.get("value") for r in rows}
    out = []
    for (name, metric), (base, base_metric) in RATIOS:
        value, baseline = values.get((name, metric)), values.get((base, base_metric))
        if value and baseline:
            out.append({"benchmark": f"{name} / {base}", "metric": metric + ", ratio",
                        "value": value / baseline, "unit": "x"})
    return out


def table(rows):
    headers = ("benchmark", "metric", "value", "unit")
    cells = [[str(r.get("benchmark", "")), str(r.get("metric", "")),
              "-" if r.get("value") is None
              else f"{r['value']:,.2f}" if r.get("unit") == "x" else f"{r['value']:,.1f}", str(r.get("unit", ""))]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for c in cells:
        out.append("  ".join([c[0].ljust(widths[0]), c[1].ljust(widths[1]),
                              c[2].rjust(widths[2]), c[3].ljust(widths[3])]))
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one)
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("results", {})
    all_rows = []
    for name in modules(args.names):
        print(f"running {name} ...", flush=True)
        rows = run_isolated(name)
        results["results"][name] = rows
        all_rows += rows
    ratios = ratio_rows(all_rows)
    results["ratios"] = ratios
    all_rows += ratios
    results["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count()}
    results["updated_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(all_rows))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
