"""The scale-out path: the same check task on Redis (django-tasks-rq) instead of the database.

A real redis-server on a free 127.0.0.1 port, a real broker, and two subprocesses with the
settings a scaled-out deployment has (``PORTAL_TASKS_REDIS_URL``): one enqueues a check, an
``rqworker`` runs it. Nothing in the task code knows which backend runs it.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest
from django.db import connection

from devices.models import CheckStatus, ConnectionCheck
from tests.broker_fixtures import ROOT, free_port

pytestmark = pytest.mark.broker  # redis-server, a broker and an rqworker

REDIS = shutil.which("redis-server")


@pytest.fixture
def redis_url(tmp_path):
    if REDIS is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: apt-get install -y redis-server")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server enables this)")
    port = free_port()
    process = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while subprocess.run(
        ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
    ).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def scaled_out_env(redis_url, broker):
    env = os.environ.copy()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
            "PORTAL_TEST_TASKS_BACKEND": "rq",
            "PORTAL_TASKS_REDIS_URL": redis_url,
            "PORTAL_MQTT_HOST": broker.host,
            "PORTAL_MQTT_PORT": str(broker.port),
            "PORTAL_MQTT_TLS_PORT": str(broker.tls_port),
            "PORTAL_MQTT_CA_FILE": broker.ca_file,
            "PORTAL_CHECK_TIMEOUT": "3",
        }
    )
    return env


def manage(env, *args, timeout=60):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_check_runs_on_redis_with_an_rq_worker(mqtt_broker, redis_url, device):
    env = scaled_out_env(redis_url, mqtt_broker)
    enqueue = (
        "from devices.models import Device; from devices.tasks import request_check; "
        "from django.db import transaction\n"
        "with transaction.atomic():\n"
        "    check = request_check(Device.objects.get(device_id='sensor-001'))\n"
        "print('CHECK', check.pk)"
    )
    output = manage(env, "shell", "-c", enqueue)
    check_id = int(output.split("CHECK")[1].split()[0])
    assert ConnectionCheck.objects.get(pk=check_id).status == CheckStatus.QUEUED

    manage(env, "rqworker", "default", "--burst", "--job-class", "django_tasks_rq.backend.Job",
           timeout=90)

    check = ConnectionCheck.objects.get(pk=check_id)
    assert check.status == CheckStatus.SUCCEEDED, (check.outcome, check.reason)
    assert check.outcome == "accepted"
    assert check.latencies.get("puback") is not None


def test_a_queue_that_is_down_fails_the_check_instead_of_leaving_it_queued(
    mqtt_broker, device
):
    # Redis on a port nothing listens on: enqueueing fails for real.
    env = scaled_out_env(f"redis://127.0.0.1:{free_port()}/0", mqtt_broker)
    enqueue = (
        "from devices.models import Device; from devices.tasks import request_check\n"
        "check = request_check(Device.objects.get(device_id='sensor-001'))\n"
        "print('CHECK', check.pk)"
    )
    output = manage(env, "shell", "-c", enqueue)
    check = ConnectionCheck.objects.get(pk=int(output.split("CHECK")[1].split()[0]))
    assert check.status == CheckStatus.FAILED
    assert check.outcome == "internal_error"
    assert "could not be queued" in check.reason
