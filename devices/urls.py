"""The JSON API for scripts and factory tools (``/api/v1/...``)."""

from django.urls import path

from . import api

DEVICE = "products/<str:product_id>/devices/<str:device_id>/"

urlpatterns = [
    path("openapi.json", api.openapi_description, name="api-openapi"),
    path(DEVICE + "mqtt-params", api.mqtt_params, name="api-mqtt-params"),
    path(DEVICE + "kit", api.device_kit, name="api-device-kit"),
    path(DEVICE + "checks", api.device_checks, name="api-device-checks"),
    path(DEVICE + "connections", api.device_connections, name="api-device-connections"),
    path("checks/<int:check_id>", api.check_detail, name="api-check"),
    path(DEVICE + "messages", api.device_messages, name="api-device-messages"),
    path(DEVICE + "traces", api.device_traces, name="api-device-traces"),
    path("traces/<int:trace_id>", api.trace_detail, name="api-trace"),
    path("traces/<int:trace_id>/stop", api.trace_stop, name="api-trace-stop"),
]
