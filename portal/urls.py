from django.contrib import admin
from django.urls import include, path

from devices import api, check_views, hooks

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/openapi.json", api.openapi_description, name="api-openapi"),
    path(
        "api/v1/products/<str:product_id>/devices/<str:device_id>/mqtt-params",
        api.mqtt_params,
        name="api-mqtt-params",
    ),
    path(
        "api/v1/products/<str:product_id>/devices/<str:device_id>/checks",
        api.device_checks,
        name="api-device-checks",
    ),
    path("api/v1/checks/<int:check_id>", api.check_detail, name="api-check"),
    path(
        "products/<str:product_id>/devices/<str:device_id>/checks/",
        check_views.device_run_check,
        name="device-run-check",
    ),
    path("mqtt/auth", hooks.mqtt_auth, name="mqtt-auth"),
    path("mqtt/acl", hooks.mqtt_acl, name="mqtt-acl"),
    path("mqtt/events", hooks.mqtt_events, name="mqtt-events"),
    path("", include("devices.urls")),
]
