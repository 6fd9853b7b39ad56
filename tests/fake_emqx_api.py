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

For the message trace and send (devices/emqx_trace.py, the same EMQX 5.8 files it names):

- ``GET /api/v5/clients/{clientid}/subscriptions``: 200 ``[{"topic", "qos", "clientid", "node"}]``
  (404 as above when not connected);
- ``POST /api/v5/publish`` ``{"topic", "payload", "qos", "retain", "payload_encoding"}``: 200
  ``{"id"}`` when a connected client's subscription matches, else 202 ``{"reason_code": 16,
  "message": "no_matching_subscribers"}`` (emqx_mgmt_api_publish.erl); 400 for a bad qos/encoding;
- ``POST /api/v5/connectors`` and ``POST /api/v5/actions`` ``{"type", "name", ...}``: 201, or 400
  ``{"code": "ALREADY_EXISTS"}`` for a name already used;
- ``POST /api/v5/rules`` ``{"id", "sql", "actions", ...}``: 201 with the rule (400 ALREADY_EXISTS
  for a used id); ``DELETE /api/v5/rules/{id}``: 204, or 404 ``{"code": "NOT_FOUND"}``.
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
        self.subscriptions: dict[str, list[tuple[str, int]]] = {}
        self.published: list[dict] = []
        self.connectors: dict[str, dict] = {}
        self.actions: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
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
                if method == "POST" or self.path.startswith("/api/v5/rules/"):
                    return self._answer(*fake.v5_call(method, self.path, self._body()))
                if self.path.startswith(PREFIX) and self.path.endswith("/subscriptions"):
                    client_id = unquote(self.path[len(PREFIX):-len("/subscriptions")])
                    if client_id not in fake.connected:
                        return self._answer(404, {"code": "CLIENTID_NOT_FOUND",
                                                  "message": "Client ID not found"})
                    return self._answer(200, [{"topic": t, "qos": q, "clientid": client_id,
                                               "node": "emqx@127.0.0.1"}
                                              for t, q in fake.subscriptions.get(client_id, [])])
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

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def _body(self):
                length = int(self.headers.get("content-length") or 0)
                try:
                    return json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    return None

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

    @staticmethod
    def _matches(topic, topic_filter):
        from devices.topics import topic_matches

        return topic_matches(topic, topic_filter)

    def v5_call(self, method, path, body):
        """The publish, connector, action and rule calls: (status, JSON answer)."""
        import base64 as b64

        if method == "POST" and path == "/api/v5/publish":
            if not isinstance(body, dict) or body.get("qos", 0) not in (0, 1, 2) or \
                    body.get("payload_encoding", "plain") not in ("plain", "base64"):
                return 400, {"code": "BAD_REQUEST", "message": "bad publish"}
            payload = body.get("payload", "")
            data = b64.b64decode(payload) if body.get("payload_encoding") == "base64" else payload.encode()
            self.published.append({**body, "data": data})
            if not any(self._matches(body["topic"], f) for client in self.connected
                       for f, _q in self.subscriptions.get(client, [])):
                return 202, {"reason_code": 16, "message": "no_matching_subscribers"}
            return 200, {"id": f"{len(self.published):032X}"}
        for prefix, store, key in (("/api/v5/connectors", self.connectors, "name"),
                                   ("/api/v5/actions", self.actions, "name"),
                                   ("/api/v5/rules", self.rules, "id")):
            if method == "POST" and path == prefix:
                if not isinstance(body, dict) or not body.get(key):
                    return 400, {"code": "BAD_REQUEST", "message": f"{key} is required"}
                if body[key] in store:
                    return 400, {"code": "ALREADY_EXISTS", "message": "already exists"}
                store[body[key]] = body
                return 201, body
            if method == "DELETE" and path.startswith(prefix + "/"):
                name = unquote(path[len(prefix) + 1:])
                if store.pop(name, None) is None:
                    return 404, {"code": "NOT_FOUND", "message": "not found"}
                return 204, None
        return 404, {"code": "NOT_FOUND", "message": "Not found"}
