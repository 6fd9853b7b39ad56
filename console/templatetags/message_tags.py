"""What the device page's "Messages" section (templates/devices/_messages.html) shows. Reads only."""

from django import template
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.urls import reverse

from devices import emqx, message_trace
from devices.choices import Permission

register = template.Library()


def _who_may_grant():
    """Names of the people who can give the permission (superusers), at most three."""
    users = get_user_model().objects.filter(Q(is_superuser=True), is_active=True)
    return [u.get_username() for u in users.order_by("pk")[:3]]


@register.simple_tag
def message_section(device, user):
    may_trace = user.has_perm(Permission.TRACE)
    context = {"may_trace": may_trace, "emqx": emqx.enabled(),
               "spaces": [f"/sys/{device.product.product_id}/{device.device_id}/",
                          f"/{device.product.product_id}/{device.device_id}/"],
               "max_minutes": message_trace.MAX_MINUTES,
               "default_minutes": message_trace.DEFAULT_MINUTES}
    if not may_trace:
        context["ask"] = _who_may_grant()
        return context
    trace = device.traces.first()
    rows = []
    if trace is not None:
        for message in trace.messages.order_by("id")[: message_trace.MAX_MESSAGES]:
            row = message_trace.message_to_dict(message)
            row["shown"] = message_trace.pretty(row["payload"], row["encoding"])
            rows.append(row)
    context.update({
        "trace": trace,
        "rows": rows,
        "subscriptions": message_trace.current_subscriptions(device),
        "api_url": reverse("api-trace", args=[trace.pk]) if trace is not None else "",
        "limit": message_trace.MAX_MESSAGES,
    })
    return context
