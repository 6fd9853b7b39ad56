"""``POST /mqtt/trace``: EMQX's trace rule (devices.emqx_trace) sends each message of a traced
device here, with the hooks' bearer token. Only traced devices have a rule, so an untraced device
costs no call. The body is the rule's selected fields: ``event`` (``message.publish`` or
``message.delivered``), ``clientid``, ``topic``, ``qos``, ``payload_b64``, ``trace_id``."""

import base64
import binascii

from django.http import HttpResponse

from devices import message_trace
from devices.api import error_response
from devices.choices import TraceDirection
from devices.emqx import emqx_client_id
from devices.models import Trace

from .hooks import broker_hook

DIRECTIONS = {"message.publish": TraceDirection.FROM_DEVICE,
              "message.delivered": TraceDirection.TO_DEVICE}


@broker_hook
def mqtt_trace(request, body):
    trace_id, event = body.get("trace_id"), body.get("event")
    if isinstance(trace_id, bool) or not isinstance(trace_id, int):
        return error_response(400, "invalid_field", "trace_id must be the trace's id.", "trace_id")
    if event not in DIRECTIONS:
        return error_response(400, "invalid_field",
                              "event must be message.publish or message.delivered.", "event")
    topic, qos = body.get("topic"), body.get("qos", 0)
    if not isinstance(topic, str) or qos not in (0, 1, 2):
        return error_response(400, "invalid_field", "topic must be text, qos 0, 1 or 2.", "topic")
    try:
        data = base64.b64decode(body.get("payload_b64") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        return error_response(400, "invalid_field", "payload_b64 must be base64.", "payload_b64")
    trace = Trace.objects.select_related("device__product").filter(pk=trace_id).first()
    # A message of another client (or of an ended trace) is not this trace's: answered, dropped.
    if trace is not None and body.get("clientid") == emqx_client_id(trace.device):
        message_trace.record_now(trace, DIRECTIONS[event], topic, qos, data)
    return HttpResponse(status=204)
