"""The admin's "Test connection" actions on devices (listed in ``DeviceAdmin.actions``)."""

from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .choices import Permission
from .tasks import DeviceOnlineError, request_check


def _queue_checks(request, queryset, force):
    if not request.user.has_perm(Permission.RUN_CHECK):
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
