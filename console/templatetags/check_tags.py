"""What the device page's "Connection checks" section shows (templates/devices/_checks.html).

A template tag rather than view context, so that the console's views need not know about checks.
"""

from django import template
from django.conf import settings
from django.urls import reverse

from devices.choices import CHECK_PROTOCOLS, CHECK_STATUS_BADGES, DeviceStatus, Permission
from devices.options import QUERY_NAMES

register = template.Library()

HISTORY_LENGTH = 10


@register.simple_tag(takes_context=True)
def check_panel(context, device):
    """The device's latest checks and what the user may do. Reads only: a check whose worker
    died shows as failed (``ConnectionCheck.get_status``) without being written."""
    request = context.get("request")
    user = getattr(request, "user", None)
    checks = list(device.checks.select_related("requested_by")[:HISTORY_LENGTH])
    product_id, device_id = device.product.product_id, device.device_id
    return {
        "checks": checks,
        "can_run": bool(user and user.has_perm(Permission.RUN_CHECK)),
        "online": device.status == DeviceStatus.ONLINE,
        "protocols": list(CHECK_PROTOCOLS),
        "tls_available": bool(settings.MQTT_TLS_PORT),
        # The panel's options as the page was asked for, so that the form without JavaScript
        # tests what the panel shows (checks.js reads the panel's live values instead).
        "options": [
            (name, request.GET[name]) for name in QUERY_NAMES if request and request.GET.get(name)
        ],
        "api_url": reverse("api-device-checks", args=[product_id, device_id]),
        "form_url": reverse("device-run-check", args=[product_id, device_id]),
        "check_url_base": reverse("api-check", args=[0])[:-1],
    }


@register.filter
def latency(check, step):
    value = (check.latencies or {}).get(step)
    return "" if value is None else f"{value:.0f}"


@register.filter
def check_badge(status):
    """The console's badge colours: green succeeded, red failed, amber queued/running."""
    return CHECK_STATUS_BADGES.get(status, "badge-inactive")
