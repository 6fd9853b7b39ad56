"""Message trace and send to device with EMQX 5, through its REST API (README, "EMQX 5").

Written from EMQX 5.8's source and documentation (no EMQX runs here; tests/fake_emqx_api.py
follows the same files):

- apps/emqx_management/src/emqx_mgmt_api_publish.erl: ``POST /api/v5/publish`` with
  ``{"topic", "payload", "qos", "retain", "payload_encoding": "plain"|"base64"}``; 200 ``{"id"}``
  when some subscriber matched, 202 ``{"reason_code": 16, "message": "no_matching_subscribers"}``
  when none did (EMQX does not wait for the device's PUBACK, so the portal answers "sent").
- apps/emqx_management/src/emqx_mgmt_api_clients.erl: ``GET /api/v5/clients/{clientid}`` (404
  when not connected) and ``GET /api/v5/clients/{clientid}/subscriptions`` (a list of
  ``{"topic", "qos", ...}``).
- apps/emqx_rule_engine/src/emqx_rule_engine_api.erl: ``POST /api/v5/rules`` ``{"id", "sql",
  "actions", "enable", "description"}`` → 201 with the rule; ``DELETE /api/v5/rules/{id}`` → 204
  (404 when gone). The rule's SQL selects the device's publishes (``FROM`` its two topic spaces)
  and ``"$events/message_delivered"`` (deliveries to it), ``WHERE clientid`` is the device's, and
  sends them to the HTTP action ``http:portal_trace``.
- apps/emqx_bridge_http (connectors and actions v2, ``POST /api/v5/connectors`` and ``POST
  /api/v5/actions``, 201, or 400 ``ALREADY_EXISTS``): one HTTP connector to the portal's
  ``/mqtt/trace`` with the hook's bearer token, and one action; an empty action body makes EMQX
  send the rule's selected fields as a JSON object.
The rule is created when a trace starts and deleted when it stops (and by ``prunechecks`` for a
trace that ran out), so untraced devices cost EMQX nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from urllib.parse import quote

from django.conf import settings
from django.utils.translation import gettext as _

from .choices import SendResult
from .emqx import EmqxApi, emqx_client_id
from .topics import topic_matches, topic_spaces

logger = logging.getLogger("devices.emqx_trace")

CONNECTOR = "portal_trace"
ACTION = "portal_trace"


class EmqxTraceError(Exception):
    pass


class EmqxRestApi(EmqxApi):
    """EmqxApi with JSON bodies (the calls of this module)."""

    def call(self, method, path, body=None) -> tuple[int | None, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": self._authorization, "Accept": "application/json",
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            try:
                answer = json.loads(error.read() or b"null")
            except ValueError:
                answer = None
            return error.code, answer
        except (OSError, ValueError) as error:
            return None, str(getattr(error, "reason", error))[:200]


def _api():
    return EmqxRestApi()


def rule_sql(device, trace_id: int) -> str:
    """The rule's SQL: the device's publishes and the deliveries to it, tagged with the trace."""
    first, second = topic_spaces(device.product.product_id, device.device_id)
    client_id = emqx_client_id(device).replace("'", "")  # ids never hold a quote (spec §2)
    return (
        f"SELECT event, clientid, topic, qos, base64_encode(payload) as payload_b64, "
        f"timestamp, {int(trace_id)} as trace_id "
        f'FROM "{first}/#", "{second}/#", "$events/message_delivered" '
        f"WHERE clientid = '{client_id}'"
    )


def _ensure_action(api) -> None:
    """The HTTP connector and action the trace rules use (created once; 400 ALREADY_EXISTS)."""
    base = settings.EMQX_HOOK_BASE_URL
    if not base:
        raise EmqxTraceError(_("PORTAL_EMQX_HOOK_BASE_URL is not set (the portal's address as "
                               "EMQX reaches it)."))
    connector = {"type": "http", "name": CONNECTOR, "url": base + "/mqtt/trace",
                 "headers": {"Authorization": f"Bearer {settings.BROKER_HOOK_TOKEN}",
                             "content-type": "application/json"}}
    action = {"type": "http", "name": ACTION, "connector": CONNECTOR,
              "parameters": {"method": "post", "path": "", "body": "", "headers": {}}}
    for path, body in (("/api/v5/connectors", connector), ("/api/v5/actions", action)):
        status, answer = api.call("POST", path, body)
        exists = status == 400 and isinstance(answer, dict) and answer.get("code") == "ALREADY_EXISTS"
        if status not in (200, 201) and not exists:
            raise EmqxTraceError(_("EMQX answered %(path)s with HTTP %(status)s.")
                                 % {"path": path, "status": status})


def create_rule(trace) -> None:
    api = _api()
    _ensure_action(api)
    rule_id = f"portal_trace_{trace.pk}"
    status, answer = api.call("POST", "/api/v5/rules", {
        "id": rule_id, "sql": rule_sql(trace.device, trace.pk), "enable": True,
        "actions": [f"http:{ACTION}"],
        "description": f"portal message trace {trace.pk} (deleted when it ends)",
    })
    if status not in (200, 201):
        raise EmqxTraceError(_("EMQX answered %(path)s with HTTP %(status)s.")
                             % {"path": "/api/v5/rules", "status": status})
    trace.emqx_rule_id = (answer or {}).get("id", rule_id) if isinstance(answer, dict) else rule_id
    trace.save(update_fields=["emqx_rule_id"])


def delete_rule(trace) -> bool:
    """Delete the trace's rule (204, or 404: already gone); the id is forgotten only then."""
    from .models import Trace

    status, _answer = _api().call("DELETE", "/api/v5/rules/" + quote(trace.emqx_rule_id, safe=""))
    if status in (204, 404):
        Trace.objects.filter(pk=trace.pk).update(emqx_rule_id="")
        trace.emqx_rule_id = ""
        return True
    logger.warning("Could not delete EMQX rule %s: HTTP %s (prunechecks tries again)",
                   trace.emqx_rule_id, status)
    return False


def subscriptions(api, client_id) -> list[list]:
    status, answer = api.call("GET", f"/api/v5/clients/{quote(client_id, safe='')}/subscriptions")
    if status != 200 or not isinstance(answer, list):
        return []
    return [[item.get("topic"), item.get("qos", 0)] for item in answer if isinstance(item, dict)]


def send(device, topic: str, data: bytes, qos: int) -> dict:
    from .message_trace import MessageError, send_answer

    api = _api()
    client_id = emqx_client_id(device)
    connected = api.is_connected(client_id)
    if connected is None:
        raise MessageError(503, "broker_unavailable", _("EMQX's REST API did not answer."))
    if not connected:
        return send_answer(None, SendResult.NOT_CONNECTED, [], topic, qos)
    filters = subscriptions(api, client_id)
    if not any(topic_matches(topic, f) for f, _q in filters):
        return send_answer(None, SendResult.NO_SUBSCRIPTION, filters, topic, qos)
    status, answer = api.call("POST", "/api/v5/publish", {
        "topic": topic, "qos": qos, "retain": False, "payload_encoding": "base64",
        "payload": base64.b64encode(data).decode(),
    })
    if status == 202:
        return send_answer(None, SendResult.NO_SUBSCRIPTION, filters, topic, qos)
    if status != 200:
        raise MessageError(503, "broker_unavailable",
                           _("EMQX answered the publish with HTTP %(status)s.") % {"status": status})
    return send_answer(None, SendResult.SENT, filters, topic, qos, through_emqx=True)
