#!/usr/bin/env python
"""Django's command-line utility for the portal."""
import gc
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    finally:
        # The interpreter's exit runs the cyclic collector over every object again, more than
        # once: with Django loaded a full collection takes about 70 ms here, and the exit of
        # `checkconnections` took 0.2-0.25 s after its summary (bench_checks, gc.callbacks).
        # The process is ending, so what it made is frozen out of those collections (memory goes
        # back with the process); the atexit functions (the logs' last flush) still run.
        gc.freeze()


if __name__ == "__main__":
    main()
