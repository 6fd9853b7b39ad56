"""A fake of the part of EMQX 5.8's REST API the portal calls, as a real HTTP server on 127.0.0.1.

Built from EMQX's source (apps/emqx_management/src/emqx_mgmt_api_clients.erl, ``client(delete,
...)`` → ``kickout``; apps/emqx_dashboard/src/emqx_dashboard.erl ``api_key_authorize``):

- every call needs HTTP Basic ``api key:secret``, else 401
  ``{"code": "BAD_API_KEY_OR_SECRET", "message": "Check api_key/api_secret"}``;
- ``DELETE /api/v5/clients/{clientid}`` (the client id URL-quoted): 204 when the client was
  connected (it is kicked), 404 ``{"code": "CLIENTID_NOT_FOUND", "message": "Client ID not
  found"}`` when not;
- ``GET /api/v5/clients/{clientid}``: 200 with the client, or the same 404.

``fail_with = 500`` makes it answer that status to everything (an EMQX in trouble).
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

PREFIX = "/api/v5/clients/"


class FakeEmqxApi:
    def __init__(self, key="portal-key", secret="portal-secret-do-not-log"):
        self.key, self.secret = key, secret
        self.connected: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, raw path) of authorized calls
        self.fail_with: int | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                expected = "Basic " + base64.b64encode(f"{fake.key}:{fake.secret}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._answer(401, {"code": "BAD_API_KEY_OR_SECRET",
                                              "message": "Check api_key/api_secret"})
                fake.requests.append((method, self.path))
                if fake.fail_with is not None:
                    return self._answer(fake.fail_with, {"code": "INTERNAL_ERROR",
                                                         "message": "node down"})
                if not self.path.startswith(PREFIX) or "/" in self.path[len(PREFIX):]:
                    return self._answer(404, {"code": "NOT_FOUND", "message": "Not found"})
                client_id = unquote(self.path[len(PREFIX):])
                if client_id not in fake.connected:
                    return self._answer(404, {"code": "CLIENTID_NOT_FOUND",
                                              "message": "Client ID not found"})
                if method == "DELETE":
                    fake.connected.discard(client_id)
                    return self._answer(204)
                return self._answer(200, {"clientid": client_id, "connected": True})

            def do_DELETE(self):  # noqa: N802
                self._handle("DELETE")

            def do_GET(self):  # noqa: N802
                self._handle("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def kicked(self):
        return [unquote(path[len(PREFIX):]) for method, path in self.requests if method == "DELETE"]
