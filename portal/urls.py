"""The portal's URLs: each app brings its own (API: devices, hooks: broker, pages: console)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("devices.urls")),
    path("mqtt/", include("broker.urls")),
    path("", include("console.urls")),
]
