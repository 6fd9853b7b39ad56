"""An EMQX 5.8 stand-in that runs the README's configuration against the portal's hooks.

No EMQX runs in this repository, so this plays what EMQX 5.8 does with the ``hocon`` block of
README.md (facts and source lines: ../shared/notes/emqx-5.8-facts.md):

- Listeners: EMQX always has ``tcp``, ``ssl``, ``ws`` and ``wss`` ``default`` listeners, enabled
  unless ``listeners.<type>.default.enable = false`` (emqx_schema.erl); a listener's own
  ``authentication`` chain, else the global one; an empty chain lets anyone in
  (emqx_access_control.erl).
- The client info: ``mqtt.client_attrs_init`` runs before ``mqtt.clientid_override``
  (emqx_channel.erl ``enrich_client``), both before authentication, so ``${clientid}`` in the hooks
  is the overridden client id and ``${client_attrs.NAME}`` the value taken before it.
- Authentication: 200 JSON ``allow``/``deny``/``ignore``, 204 = allow, anything else = ignore; the
  end of the chain = not authorized.
- Authorization: ``allow``/``deny``, anything else is no match (``authorization.no_match``).
- One session per client id: a newcomer with the same client id takes over (the old session's
  ``client.disconnected`` has reason ``takenover``).
- The rule's HTTP action posts ``SELECT *`` of ``client.connected`` / ``client.disconnected``
  (emqx_rule_events.erl ``eventmsg_connected`` / ``eventmsg_disconnected``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pyhocon import ConfigFactory

README = Path(__file__).resolve().parent.parent / "README.md"
PLACEHOLDER = re.compile(r"\$\{([a-z_.]+)\}")
LISTENER_TYPES = ("tcp", "ssl", "ws", "wss")


def readme_emqx_config():
    block = re.search(r"```hocon\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md has no ```hocon block with the EMQX configuration"
    return ConfigFactory.parse_string(block.group(1), resolve=False)


def _lookup(values, name):
    value = values
    for part in name.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render(template, values):
    """Fill EMQX placeholders: ``${.}`` is the whole event, ``${a.b}`` a (nested) value; an
    unknown one renders empty, as EMQX does."""
    if template == "${.}":
        return values
    if isinstance(template, str):
        return PLACEHOLDER.sub(lambda m: _lookup(values, m.group(1)), template)
    return {key: render(value, values) for key, value in template.items()}


def send(client, token, method, url, headers, body):
    """The HTTP request EMQX makes from a configured call (``CHANGE-ME`` is the token)."""
    headers = {k.lower(): v.replace("CHANGE-ME", token) for k, v in headers.items()}
    assert method == "post"
    assert headers["content-type"] == "application/json"
    return client.post(
        urlparse(url).path, data=json.dumps(body), content_type=headers["content-type"],
        HTTP_AUTHORIZATION=headers["authorization"],
    )


class ListenerClosed(Exception):
    """Nothing listens there (the listener is disabled)."""


class NotAuthorized(Exception):
    """CONNACK 0x05 / 0x87: the authentication chain did not allow the CONNECT."""


@dataclass
class Session:
    clientinfo: dict
    peername: str
    connected_at: int
    alive: bool = True


@dataclass
class Emqx:
    """The README's configuration, played with the Django test client as the network."""

    client: object
    token: str
    config: object = field(default_factory=readme_emqx_config)
    sessions: dict = field(default_factory=dict)  # EMQX client id -> Session
    clock_ms: int = 1_900_000_000_000
    next_port: int = 50_000

    # -- HTTP ---------------------------------------------------------------------------------

    def _send(self, method, url, headers, body):
        return send(self.client, self.token, method, url, headers, body)

    def _tick(self):
        self.clock_ms += 10
        return self.clock_ms

    # -- listeners and client info ------------------------------------------------------------

    def listener(self, kind):
        assert kind in LISTENER_TYPES
        return self.config.get(f"listeners.{kind}.default", {}) or {}

    def listener_enabled(self, kind):
        return self.listener(kind).get("enable", True) is not False

    def authenticators(self, kind):
        own = self.listener(kind).get("authentication", None)
        return list(own) if own else list(self.config.get("authentication", []) or [])

    def clientinfo(self, mqtt_client_id, username, peerhost):
        info = {"clientid": mqtt_client_id, "username": username, "peerhost": peerhost,
                "client_attrs": {}}
        for init in self.config.get("mqtt.client_attrs_init", []) or []:
            assert init["expression"] in ("clientid", "username"), "only these are played"
            value = info[init["expression"]]
            if value:
                info["client_attrs"][init["set_as_attr"]] = value
        override = self.config.get("mqtt.clientid_override", None)
        if override:
            assert override == "username", "only clientid_override = username is played"
            info["clientid"] = username
        return info

    # -- MQTT ---------------------------------------------------------------------------------

    def connect(self, kind, mqtt_client_id, username, password, peerhost="192.0.2.10",
                events="connected first"):
        """CONNECT on a listener; returns the Session or raises ListenerClosed/NotAuthorized."""
        if not self.listener_enabled(kind):
            raise ListenerClosed(kind)
        info = self.clientinfo(mqtt_client_id, username, peerhost)
        chain = self.authenticators(kind)
        allowed = not chain  # an empty chain lets anyone in
        for authenticator in chain:
            assert (authenticator["mechanism"], authenticator["backend"]) == ("password_based", "http")
            body = render(authenticator["body"], {**info, "password": password})
            response = self._send(authenticator["method"], authenticator["url"],
                                  authenticator["headers"], body)
            if response.status_code == 204:
                allowed = True
                break
            if response.status_code == 200 and response.json().get("result") in ("allow", "deny"):
                allowed = response.json()["result"] == "allow"
                break
        if not allowed:
            raise NotAuthorized(mqtt_client_id)
        self.next_port += 1
        session = Session(info, f"{peerhost}:{self.next_port}", self._tick())
        replaced = self.sessions.get(info["clientid"])
        self.sessions[info["clientid"]] = session
        deliveries = [lambda: self.event("client.connected", session)]
        if replaced is not None:
            replaced.alive = False
            deliveries.append(lambda: self.event("client.disconnected", replaced, "takenover"))
        if events != "connected first":
            deliveries.reverse()
        for deliver in deliveries:
            deliver()
        return session

    def disconnect(self, session, reason="normal"):
        assert session.alive
        session.alive = False
        if self.sessions.get(session.clientinfo["clientid"]) is session:
            del self.sessions[session.clientinfo["clientid"]]
        self.event("client.disconnected", session, reason)

    def authorize(self, session, action, topic, qos=1, retain=False):
        """``allow`` or ``deny`` as EMQX decides it with the README's authorization."""
        values = {**session.clientinfo, "action": action, "topic": topic, "qos": qos,
                  "retain": retain}
        for source in self.config.get("authorization.sources"):
            assert source["type"] == "http"
            response = self._send(source["method"], source["url"], source["headers"],
                                  render(source["body"], values))
            if response.status_code == 200 and response.json().get("result") in ("allow", "deny"):
                return response.json()["result"]
        return self.config.get("authorization.no_match")

    # -- the rule engine's webhook ------------------------------------------------------------

    def event(self, name, session, reason=None):
        rule = self.config.get("rule_engine.rules.portal_status")
        topic = "$events/" + name.replace(".", "_")
        assert f'"{topic}"' in rule["sql"], f"the rule does not select {topic}"
        info = session.clientinfo
        now = self._tick()
        if name == "client.connected":
            body = {"event": name, "clientid": info["clientid"], "username": info["username"],
                    "peername": session.peername, "sockname": "0.0.0.0:1883",
                    "proto_name": "MQTT", "proto_ver": 4,
                    "connected_at": session.connected_at, "timestamp": now}
        else:
            # EMQX's client.disconnected carries no connected_at (emqx_rule_events.erl).
            body = {"event": name, "clientid": info["clientid"], "username": info["username"],
                    "peername": session.peername, "sockname": "0.0.0.0:1883",
                    "proto_name": "MQTT", "proto_ver": 4,
                    "reason": reason, "disconnected_at": now, "timestamp": now}
        action = self.config.get(f"actions.http.{rule['actions'][0].split(':', 1)[1]}")
        connector = self.config.get(f"connectors.http.{action['connector']}")
        parameters = action["parameters"]
        url = connector["url"].rstrip("/") + parameters["path"]
        headers = {**connector["headers"], **parameters.get("headers", {})}
        response = self._send(parameters["method"], url, headers,
                              render(parameters["body"], body))
        assert response.status_code == 204, response.content
        return response
