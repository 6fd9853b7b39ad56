"""What the device page's "Connection log" section (templates/devices/_connection_log.html) and
the product page's "Attempts of unknown devices" show. Reads only."""

from django import template
from django.urls import reverse

from devices.choices import ConnectionKind

register = template.Library()

LOG_LENGTH = 50
UNKNOWN_LENGTH = 20


@register.simple_tag
def connection_log(device):
    """The device's newest events and the JSON URL that connection_log.js polls."""
    return {
        "events": list(device.connection_events.all()[:LOG_LENGTH]),
        "api_url": reverse(
            "api-device-connections", args=[device.product.product_id, device.device_id]
        ),
        "kinds": ConnectionKind,
    }


@register.simple_tag
def unknown_device_attempts(product):
    """Recent attempts naming a deviceId this product does not have."""
    return list(product.connection_events.filter(device=None)[:UNKNOWN_LENGTH])
