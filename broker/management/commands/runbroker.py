"""Run the embedded MQTT broker, authenticating every CONNECT against the registry."""

import asyncio
import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from broker import embedded
from devices import tls


class Command(BaseCommand):
    help = (
        "Run the embedded MQTT broker (MQTT 3.1.1): plain TCP on --port (securemode=3) and, "
        "with --tls-port, TLS (securemode=2). Ctrl-C stops it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=settings.MQTT_PORT,
                            help="plain TCP port (default: PORTAL_MQTT_PORT)")
        parser.add_argument("--tls-port", type=int, default=settings.MQTT_TLS_PORT,
                            help="TLS port (default: PORTAL_MQTT_TLS_PORT; unset = no TLS)")
        parser.add_argument("--certfile", default=None, help="server certificate (PEM)")
        parser.add_argument("--keyfile", default=None, help="server private key (PEM)")

    def handle(self, *args, host, port, tls_port, certfile, keyfile, **options):
        for name, value in (("--port", port), ("--tls-port", tls_port)):
            if value is not None and not 1 <= value <= 65535:
                raise CommandError(f"{name} must be a port number from 1 to 65535, not {value}.")
        if tls_port:
            certfile, keyfile = self._tls_files(certfile, keyfile)
        asyncio.run(self._serve(host, port, tls_port, certfile, keyfile))

    def _tls_files(self, certfile, keyfile):
        if bool(certfile) != bool(keyfile):
            raise CommandError("--certfile and --keyfile go together: give both or neither.")
        if not certfile:
            certfile, keyfile = settings.MQTT_TLS_CERTFILE, settings.MQTT_TLS_KEYFILE
            default_dir = Path(settings.DATA_DIR) / "tls"
            if settings.DEBUG and Path(certfile).parent == default_dir:
                files = tls.ensure_development_certificates(default_dir)
                self.stdout.write(f"Development CA for securemode=2: {files.ca_file}")
        for name, path in (("--certfile", certfile), ("--keyfile", keyfile)):
            if not Path(path).is_file():
                raise CommandError(
                    f"{name}: no file at {path}. Give --certfile and --keyfile, or set "
                    "PORTAL_MQTT_TLS_CERTFILE and PORTAL_MQTT_TLS_KEYFILE (in development, "
                    "PORTAL_DEBUG=1 creates them under PORTAL_DATA_DIR/tls/)."
                )
        return str(certfile), str(keyfile)

    async def _serve(self, host, port, tls_port, certfile, keyfile):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        self.stdout.write(
            f"MQTT broker on {host}:{port} (TCP, securemode=3)"
            + (f" and {host}:{tls_port} (TLS, securemode=2)" if tls_port else ""),
        )
        self.stdout.flush()
        await embedded.serve(host, port, tls_port, certfile, keyfile, stop=stop)
