"""Console pages (the API is in devices/urls.py, the broker hooks in broker/urls.py)."""

from django.urls import path

from . import check_views, message_views, views

DEVICE = "products/<str:product_id>/devices/<str:device_id>/"

urlpatterns = [
    path("", views.index, name="index"),
    path("products/", views.product_list, name="product-list"),
    path("products/<str:product_id>/", views.product_detail, name="product-detail"),
    path("devices/", views.device_list, name="device-list"),
    path(DEVICE, views.device_detail, name="device-detail"),
    path(DEVICE + "secret/", views.device_reveal_secret, name="device-reveal-secret"),
    path(DEVICE + "rotate/", views.device_rotate_secret, name="device-rotate-secret"),
    path(DEVICE + "enabled/", views.device_set_enabled, name="device-set-enabled"),
    path(DEVICE + "debugger/", views.device_debugger, name="device-debugger"),
    path(DEVICE + "checks/", check_views.device_run_check, name="device-run-check"),
    path(DEVICE + "trace/start/", message_views.device_start_trace, name="device-start-trace"),
    path(DEVICE + "trace/stop/", message_views.device_stop_trace, name="device-stop-trace"),
    path(DEVICE + "messages/", message_views.device_send_message, name="device-send-message"),
    path("tls/ca.pem", views.ca_certificate, name="ca-certificate"),
]
