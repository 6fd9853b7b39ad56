"""The "Test connection" form of the device page, for browsers without JavaScript.

With JavaScript, static/js/checks.js posts to the JSON API instead and shows the result in
place; both paths start the check with ``tasks.request_check``.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from devices.choices import Permission
from devices.connection_check import DEFAULT_PROTOCOL
from devices.models import Device
from devices.options import QUERY_NAMES, ConnectionOptions, OptionError
from devices.tasks import DeviceOnlineError, request_check


@login_required
@require_POST
def device_run_check(request, product_id, device_id):
    try:
        device = Device.objects.for_user(request.user).lookup(product_id, device_id)
    except Device.DoesNotExist:
        raise Http404(_("No such device.")) from None
    if not request.user.has_perm(Permission.RUN_CHECK):
        raise PermissionDenied(_("Testing a connection needs the permission to add checks."))
    page = reverse("device-detail", args=[product_id, device_id]) + "#checks"
    try:
        options = ConnectionOptions.from_query({name: request.POST.get(name) for name in QUERY_NAMES})
        check = request_check(
            device,
            options=options,
            protocol=request.POST.get("protocol") or DEFAULT_PROTOCOL,
            requested_by=request.user,
            force=request.POST.get("force") == "true",
        )
    except OptionError as error:
        messages.error(request, f"{error.field}: {error.message}")
    except DeviceOnlineError as error:
        messages.warning(request, str(error))
    else:
        messages.success(
            request,
            _("Connection check %(id)s queued; reload the page to see its result.")
            % {"id": check.pk},
        )
    return redirect(page)
