"""What the benchmarks share: a fresh portal database, free ports, servers started and stopped,
and the raw MQTT 3.1.1 CONNECT that measures a broker without a client library's cost.

Not a benchmark itself (bench/run.py runs only bench_*.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def set_up_django(prefix, **env):
    """Development settings on a new SQLite database in a temporary folder, migrated.

    ``env`` adds environment variables (e.g. the broker's port) before the settings are read;
    the subprocesses a benchmark starts inherit all of it.
    """
    os.environ.update({
        "PORTAL_DEBUG": "1", "PORTAL_DATA_DIR": tempfile.mkdtemp(prefix=prefix),
        "DJANGO_SETTINGS_MODULE": "portal.settings", "PORTAL_LOG_LEVEL": "WARNING", **env,
    })
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def production_env(**extra):
    """The environment for the servers a benchmark starts (broker, worker, gunicorn): the
    production settings (``PORTAL_DEBUG=0``: no query log, no debug pages) with the development
    keys of ``set_up_django``'s data folder, as a deployment runs them."""
    data = Path(os.environ["PORTAL_DATA_DIR"])
    return {**os.environ, "PORTAL_DEBUG": "0",
            "PORTAL_SECRET_KEY": (data / "dev-secret-key.txt").read_text().strip(),
            "PORTAL_SECRETS_KEY": (data / "dev-secrets-key.txt").read_text().strip(),
            "PORTAL_ALLOWED_HOSTS": "127.0.0.1", "PORTAL_SECURE_COOKIES": "0", **extra}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port, process, timeout=30):
    """Until something accepts on 127.0.0.1:port; fails at once if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("broker exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not start")


def stop(process):
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid) -> float:
    """The process's user + system CPU time, all threads (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def remaining_length(length):
    """MQTT's variable-length integer (1–4 bytes, 7 bits each, high bit = more follows)."""
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def connect_packet(client_id, username, password, keepalive=60):
    """A MQTT 3.1.1 CONNECT with username, password and clean session."""
    body = (b"\x00\x04MQTT\x04\xc2" + keepalive.to_bytes(2, "big")
            + _string(client_id) + _string(username) + _string(password))
    return b"\x10" + remaining_length(len(body)) + body
