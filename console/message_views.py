"""The device page's "Messages" section as plain forms (start/stop a trace, send a message); the
section's JavaScript only polls the trace API for new rows. The work is devices.message_trace's."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from devices import message_trace
from devices.choices import Permission, SendResult
from devices.message_trace import MessageError

from .views import _detail_url, _get_device_for_user, devices_visible


def _traceable_device(request, product_id, device_id):
    device = _get_device_for_user(request, product_id, device_id)
    if not request.user.has_perm(Permission.TRACE):
        raise PermissionDenied(_("Tracing and sending messages needs the permission “Can trace "
                                 "and send device messages”; ask an administrator of the portal."))
    return device


def _back(device):
    return redirect(_detail_url(device) + "#messages")


@devices_visible
@require_POST
def device_start_trace(request, product_id, device_id):
    device = _traceable_device(request, product_id, device_id)
    try:
        trace = message_trace.start_trace(device, request.user, request.POST.get("minutes") or None)
    except MessageError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, _("Trace started until %(until)s.")
                         % {"until": trace.until.strftime("%H:%M:%S")})
    return _back(device)


@devices_visible
@require_POST
def device_stop_trace(request, product_id, device_id):
    device = _traceable_device(request, product_id, device_id)
    trace = message_trace.running_trace(device)
    if trace is not None:
        message_trace.stop_trace(trace)
        messages.success(request, _("The trace is stopped."))
    return _back(device)


@devices_visible
@require_POST
def device_send_message(request, product_id, device_id):
    device = _traceable_device(request, product_id, device_id)
    try:
        answer = message_trace.send_to_device(
            device, request.POST.get("topic", "").strip(), request.POST.get("payload", ""),
            request.POST.get("qos", "0"), request.user,
        )
    except MessageError as error:
        field = f" ({error.field})" if error.field else ""
        messages.error(request, error.message + field)
        return _back(device)
    text = answer["message"]
    if answer["result"] == SendResult.NO_SUBSCRIPTION:
        subscribed = ", ".join(f"{s['topic']} (QoS {s['qos']})" for s in answer["subscriptions"])
        text += " " + (_("Its subscriptions: %(list)s.") % {"list": subscribed} if subscribed
                       else _("It has no subscriptions."))
    if answer["result"] in (SendResult.ACKNOWLEDGED, SendResult.SENT):
        messages.success(request, text)
    else:
        messages.warning(request, text)
    return _back(device)
