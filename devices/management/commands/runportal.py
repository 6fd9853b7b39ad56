"""Start everything the portal needs on one machine, and stop all of it on Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server (gunicorn) and the background worker together; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000")

    def processes(self, bind):
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        return [
            (
                "web",
                [python, "-m", "gunicorn", "portal.wsgi:application", "--bind", bind,
                 "--workers", "2", "--threads", "4", "--access-logfile", "-"],
            ),
            ("worker", [python, manage, "db_worker"]),
        ]

    def handle(self, *args, bind, **options):
        children = []
        env = os.environ.copy()
        for name, command in self.processes(bind):
            children.append((name, subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)))
        self.stdout.write(
            self.style.SUCCESS(f"Portal console: http://{bind}/   (admin: http://{bind}/admin/)")
        )
        self.stdout.write("Press Ctrl-C to stop the web server and the worker.")
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
