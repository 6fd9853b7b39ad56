"""Start everything the portal needs on one machine, keep it running, and stop all of it on Ctrl-C.

Three processes: the web server (gunicorn), the background worker and the embedded MQTT broker
(``runbroker``: plain TCP on PORTAL_MQTT_PORT and, when PORTAL_MQTT_TLS_PORT is set, TLS with the
development certificates that are created here once).

Each child runs in its own process group and gets exactly one SIGTERM from here on Ctrl-C: when
the terminal's SIGINT also reached the children, gunicorn got SIGINT and then SIGTERM, which could
leave its master and a worker deadlocked with port 8000 held after `make run` had "stopped".
Whatever has not ended by the deadline is killed with its whole group (gunicorn's workers too).

A child that dies (a crash, a kill, the OOM killer) is started again, alone: the others keep
running. Restarts back off (1 s, doubling to 30 s) so that a child that cannot start does not
spin; a child that ran for RESTART_RESET_AFTER_S starts again from 1 s. The worker is
``runworker``, django_tasks_db's db_worker made to carry on through a locked database.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.utils import OperationalError

from devices import tls
from devices.models import ConnectionCheck

# The worker's poll interval when idle: a queued "Test connection" waits up to this long. Measured
# idle cost: 1.7 % of one core at 0.2 s, against 1 % for the default 1 s with the autoreloader.
WORKER_POLL_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 10
RESTART_BACKOFF_S = (1, 30)  # first wait before restarting a child that died, and the longest
RESTART_RESET_AFTER_S = 60  # a child that ran this long is restarted after the shortest wait


class Child:
    """One supervised process: its command, the running process (None while waiting to be
    restarted), and its restart back-off."""

    def __init__(self, name, command):
        self.name, self.command = name, command
        self.process = None
        self.started_at = 0.0
        self.backoff = RESTART_BACKOFF_S[0]
        self.restart_at = None

    def start(self, env):
        self.process = subprocess.Popen(self.command, env=env, cwd=settings.BASE_DIR,
                                        start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    def kill_group(self):
        """Leftovers of the child's group (a gunicorn worker whose master died) go too."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def died(self, now):
        """The exit is noted: when to start again, and words for the log."""
        code = self.process.returncode
        self.kill_group()
        self.process = None
        ran = now - self.started_at
        if ran >= RESTART_RESET_AFTER_S:
            self.backoff = RESTART_BACKOFF_S[0]
        wait, self.backoff = self.backoff, min(self.backoff * 2, RESTART_BACKOFF_S[1])
        self.restart_at = now + wait
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return f"{self.name} {how} after {ran:.0f} s; restarting it in {wait} s."


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn), the background worker and the MQTT broker together, "
        "restarting any of them that dies; Ctrl-C stops all of them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--mqtt-bind-host", default="127.0.0.1",
                            help="address the embedded MQTT broker listens on")

    def broker_command(self, host):
        command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "runbroker",
                   "--host", host, "--port", str(settings.MQTT_PORT)]
        if settings.MQTT_TLS_PORT:
            command += ["--tls-port", str(settings.MQTT_TLS_PORT),
                        "--certfile", settings.MQTT_TLS_CERTFILE,
                        "--keyfile", settings.MQTT_TLS_KEYFILE]
        return command

    def prepare_tls(self):
        """In development, the CA and server certificate are made once under DATA_DIR/tls/."""
        if not settings.MQTT_TLS_PORT:
            return
        default_dir = Path(settings.DATA_DIR) / "tls"
        if settings.DEBUG and Path(settings.MQTT_TLS_CERTFILE).parent == default_dir:
            tls.ensure_development_certificates(default_dir)

    def processes(self, bind, mqtt_bind_host):
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        return [
            (
                "web",
                [python, "-m", "gunicorn", "portal.wsgi:application", "--bind", bind,
                 "--workers", "2", "--threads", "4", "--access-logfile", "-",
                 "--graceful-timeout", str(STOP_TIMEOUT_S - 3)],
            ),
            # No autoreloader (its file polling costs CPU, and its child would outlive a signal to
            # the parent); a short poll interval so that a queued check starts at once.
            ("worker", [python, manage, "runworker", "--no-reload",
                        "--interval", str(WORKER_POLL_INTERVAL_S)]),
            ("broker", self.broker_command(mqtt_bind_host)),
        ]

    def handle(self, *args, bind, mqtt_bind_host, **options):
        self.prepare_tls()
        # Checks left running by a worker that was killed (e.g. the last `make run` ended
        # badly) are failed as "interrupted" now, before the new worker starts.
        try:
            interrupted = ConnectionCheck.objects.reap_stale()
        except OperationalError as error:  # a locked database: the worker settles them later
            self.stderr.write(f"Could not look for interrupted connection checks: {error}")
            interrupted = 0
        if interrupted:
            self.stdout.write(f"Marked {interrupted} interrupted connection check(s) failed.")
        env = os.environ.copy()
        children = [Child(name, command) for name, command in self.processes(bind, mqtt_bind_host)]
        for child in children:
            child.start(env)
        self.stdout.write(
            self.style.SUCCESS(f"Portal console: http://{bind}/   (admin: http://{bind}/admin/)")
        )
        self.stdout.write(
            f"MQTT broker: {settings.MQTT_HOST}:{settings.MQTT_PORT} (TCP, securemode=3)"
            + (f", {settings.MQTT_HOST}:{settings.MQTT_TLS_PORT} (TLS, securemode=2; CA "
               f"certificate for devices: {settings.MQTT_CA_FILE})" if settings.MQTT_TLS_PORT else "")
        )
        self.stdout.write("Press Ctrl-C to stop the web server, the worker and the broker.")
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                now = time.monotonic()
                for child in children:
                    if child.process is not None and child.process.poll() is not None:
                        self.stderr.write(child.died(now))
                    elif child.process is None and now >= child.restart_at and not stopping:
                        child.start(env)
                        self.stdout.write(f"Restarted {child.name} (pid {child.process.pid}).")
                time.sleep(0.2)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
            running = [child for child in children if child.process is not None]
            for child in running:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for child in running:
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{child.name} did not stop within {STOP_TIMEOUT_S} s; killed.")
                child.kill_group()
                child.process.wait()
        self.stdout.write("Stopped.")
