"""The HTTP hooks an EMQX cluster calls (``/mqtt/...``)."""

from django.urls import path

from . import hooks, trace_hook

urlpatterns = [
    path("auth", hooks.mqtt_auth, name="mqtt-auth"),
    path("acl", hooks.mqtt_acl, name="mqtt-acl"),
    path("events", hooks.mqtt_events, name="mqtt-events"),
    path("trace", trace_hook.mqtt_trace, name="mqtt-trace"),
]
