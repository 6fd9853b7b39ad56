"""Start everything the portal needs on one machine, and stop all of it on Ctrl-C.

Three processes: the web server (gunicorn), the background worker and the embedded MQTT broker
(``runbroker``: plain TCP on PORTAL_MQTT_PORT and, when PORTAL_MQTT_TLS_PORT is set, TLS with the
development certificates that are created here once).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from devices import tls


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn), the background worker and the MQTT broker together; "
        "Ctrl-C stops all of them."
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
                 "--workers", "2", "--threads", "4", "--access-logfile", "-"],
            ),
            ("worker", [python, manage, "db_worker"]),
            ("broker", self.broker_command(mqtt_bind_host)),
        ]

    def handle(self, *args, bind, mqtt_bind_host, **options):
        self.prepare_tls()
        children = []
        env = os.environ.copy()
        for name, command in self.processes(bind, mqtt_bind_host):
            children.append((name, subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)))
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
                for name, child in children:
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with code {child.returncode}; stopping.")
                        stopping = True
                time.sleep(0.2)
        finally:
            for _name, child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for _name, child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
        self.stdout.write("Stopped.")
