"""Connection checks in the admin: the "Test connection" actions on devices, and a read-only
list of checks where their progress shows.

Kept apart from devices/admin.py (the registry's admin); that module imports this one last.
"""

from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .admin import DeviceAdmin
from .models import ConnectionCheck
from .tasks import DeviceOnlineError, request_check

CHECK_PERMISSION = "devices.add_connectioncheck"


def _queue_checks(request, queryset, force):
    if not request.user.has_perm(CHECK_PERMISSION):
        messages.error(request, _("Testing a connection needs the permission “Can add connection check”."))
        return None
    queued, online = [], []
    with transaction.atomic():  # the tasks are enqueued when this commits: all at once
        for device in queryset.select_related("product"):
            try:
                queued.append(request_check(device, requested_by=request.user, force=force))
            except DeviceOnlineError:
                online.append(device.device_id)
    if queued:
        url = reverse("admin:devices_connectioncheck_changelist") + "?id__in=" + ",".join(
            str(check.pk) for check in queued
        )
        messages.success(
            request,
            format_html(
                '{} <a href="{}">{}</a>',
                ngettext("%(count)d connection check queued.", "%(count)d connection checks queued.",
                         len(queued)) % {"count": len(queued)},
                url,
                _("See their progress"),
            ),
        )
    if online:
        messages.warning(
            request,
            _("Not tested because they are online (a check would disconnect them): %(devices)s. "
              "Use “Test connection, also online devices” to test them anyway.")
            % {"devices": ", ".join(online)},
        )
    return None


@admin.action(description=_("Test connection"))
def test_connection(modeladmin, request, queryset):
    return _queue_checks(request, queryset, force=False)


@admin.action(description=_("Test connection, also online devices (disconnects them)"))
def test_connection_force(modeladmin, request, queryset):
    return _queue_checks(request, queryset, force=True)


DeviceAdmin.actions = [*DeviceAdmin.actions, test_connection, test_connection_force]


@admin.register(ConnectionCheck)
class ConnectionCheckAdmin(admin.ModelAdmin):
    list_display = [
        "id", "device", "status", "result", "connack_code", "latency", "queued_at",
        "finished_at", "requested_by",
    ]
    list_filter = ["status", "outcome"]
    list_select_related = ["device__product", "requested_by"]
    search_fields = ["device__device_id", "device__product__product_id"]
    readonly_fields = [f.name for f in ConnectionCheck._meta.fields]

    @admin.display(description=_("result"))
    def result(self, check):
        return check.message or "…"

    @admin.display(description=_("latency (ms)"))
    def latency(self, check):
        return "" if check.latency_ms is None else f"{check.latency_ms:.0f}"

    def get_queryset(self, request):
        ConnectionCheck.objects.reap_stale()
        return super().get_queryset(request)

    def has_add_permission(self, request):
        return False  # checks start from a device ("Test connection"), never from an empty form

    def has_change_permission(self, request, obj=None):
        return False
