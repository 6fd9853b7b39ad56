"""DATABASE_URL takes PostgreSQL: a real server in a temporary cluster, production settings.

Migrates, runs the first-run set-up, registers a batch, and reads a device's parameters back,
all through ``manage.py`` with ``PORTAL_DEBUG`` off, as a deployment would.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.broker_fixtures import ROOT, free_port

pytestmark = pytest.mark.broker  # a PostgreSQL server and manage.py subprocesses

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def as_postgres(*command, **kwargs):
    """PostgreSQL refuses to run as root; run its tools as the postgres user when we are root."""
    if os.geteuid() == 0:
        command = ("runuser", "-u", "postgres", "--", *command)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


@pytest.fixture
def postgres_url():
    if not INITDB:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing: apt-get install -y postgresql")
        pytest.skip("PostgreSQL server is not installed (apt-get install -y postgresql enables this)")
    bindir = os.path.dirname(INITDB[-1])
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="portal-pg-"))
    cluster = base / "pg"
    cluster.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(cluster, "postgres")
    result = as_postgres(f"{bindir}/initdb", "-D", str(cluster), "-U", "portal", "--auth=trust")
    assert result.returncode == 0, result.stderr
    port = free_port()
    server = subprocess.Popen(
        (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
        + [f"{bindir}/postgres", "-D", str(cluster), "-p", str(port), "-k", str(base),
           "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while as_postgres(f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)).returncode != 0:
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            pytest.fail("PostgreSQL did not start")
        time.sleep(0.1)
    created = as_postgres(
        f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "portal", "portal"
    )
    assert created.returncode == 0, created.stderr
    yield f"postgres://portal@127.0.0.1:{port}/portal"
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(base, ignore_errors=True)


def manage(env, *args):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_portal_runs_on_postgresql(postgres_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DATABASE_URL"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": postgres_url,
            "PORTAL_DATA_DIR": str(tmp_path / "data"),
            "PORTAL_SECRET_KEY": "postgres-test-secret-key-" + "x" * 30,
            "PORTAL_SECRETS_KEY": "eBZPVP7ZnR1VCEs5LzF8vNg1lYzCXUbx8dP8r0xK0Hc=",
        }
    )
    manage(env, "migrate", "--noinput")
    assert "password:" in manage(env, "setupportal")
    script = (
        "from django.db import connection\n"
        "from devices.batch import generated_rows, register_batch\n"
        "from devices.models import Device, Product\n"
        "from devices.options import ConnectionOptions\n"
        "d = Device.objects.get(device_id='demo-device-001')\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT device_secret FROM devices_device WHERE id = %s', [d.pk])\n"
        "    raw = c.fetchone()[0]\n"
        "assert d.device_secret not in raw and raw.startswith('fernet:'), raw\n"
        "p = d.connection_params(ConnectionOptions(securemode=3, signmethod='hmacsha1', "
        "timestamp=789, client_id='12345'))\n"
        "print('PARAMS', p['mqttClientId'], p['mqttUsername'], p['mqttPassword'], d.device_secret)\n"
        "print('ENGINE', connection.vendor)\n"
        "product = Product.objects.get(product_id='demo-product')\n"
        "register_batch(product, generated_rows('pg-', 500, width=3))\n"
        "print('DEVICES', product.devices.count())\n"
        "from tests.test_hot_queries import compare_with_orm\n"  # hand-built SQL on PostgreSQL
        "print('HOT QUERIES', len(compare_with_orm()))\n"
        "from tests.test_connection_log import round_trip_on_this_database\n"  # its own SQL
        "print('CONNECTION LOG', round_trip_on_this_database().count)\n"
    )
    output = manage(env, "shell", "-c", script)
    assert "ENGINE postgresql" in output
    assert "DEVICES 501" in output
    assert "HOT QUERIES" in output
    assert "CONNECTION LOG 3" in output
    client_id, username, password, secret = output.split("PARAMS ")[1].split()[:4]
    assert client_id == "12345|securemode=3,signmethod=hmacsha1,timestamp=789|"
    assert username == "demo-device-001&demo-product"
    import hashlib
    import hmac

    content = "clientId12345deviceIddemo-device-001productIddemo-producttimestamp789"
    assert password == hmac.new(secret.encode(), content.encode(), hashlib.sha1).hexdigest()
