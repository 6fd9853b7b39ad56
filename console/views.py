"""Console pages (function views): parse input, call the model, render.

The connection parameters come from ``Device.connection_params`` (the JSON endpoint's code);
the signature debugger's reasoning lives in ``devices.diagnosis``.
"""

from functools import wraps
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from devices.choices import DEFAULT_SIGN_METHOD, SIGN_METHODS_OFFERED, Permission, may_rotate_secret
from devices.device_code import connect_packet_size, size_warnings
from devices.diagnosis import diagnose
from devices.models import AuditEvent, Device, DeviceStatus, Product
from devices.options import QUERY_NAMES, ConnectionOptions, OptionError
from devices.search import search_devices

from .forms import DebuggerForm, DeviceFilterForm

PAGE_SIZE = 50


def devices_visible(view):
    """Logged in (else the login page), then allowed to see devices: a 403 that names the
    permission, rather than empty lists that leave a person guessing."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.has_perm(Permission.VIEW_DEVICE):
            raise PermissionDenied(
                _("Seeing devices needs the permission “Can view device” (devices.view_device).")
            )
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def _get_device_for_user(request, product_id, device_id):
    try:
        return Device.objects.for_user(request.user).lookup(product_id, device_id)
    except Device.DoesNotExist:
        raise Http404(_("No such device.")) from None


def _page_number(request):
    raw = request.GET.get("page", "1")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 100_000 else 1


def _device_page(queryset, page):
    """One page of devices without counting them all: fetch one more row to see if a next exists.

    A COUNT over 100,000 filtered rows costs more than the page itself; "next" is all we need.
    """
    start = (page - 1) * PAGE_SIZE
    # The page's ids first, from the devices table alone: joined with products, SQLite's planner
    # sorted a product's 1,000,000 devices in a temporary B-tree (340 ms); alone, it walks the
    # (product, deviceId) index in order (under 1 ms). Then the page's rows by id.
    ids = list(queryset.values_list("pk", flat=True)[start : start + PAGE_SIZE + 1])
    loaded = Device.objects.filter(pk__in=ids).select_related("product").only(
        "device_id", "name", "status", "enabled", "last_online_at", "product__product_id",
        "product__name",
    )
    by_pk = {device.pk: device for device in loaded}
    rows = [by_pk[pk] for pk in ids if pk in by_pk]
    return {
        "devices": rows[:PAGE_SIZE],
        "page": page,
        "has_next": len(rows) > PAGE_SIZE,
        "has_previous": page > 1,
        "first_index": start + 1,
        "last_index": start + min(len(rows), PAGE_SIZE),
    }


def _filtered_devices(form, product=None):
    devices = Device.objects.order_by("product_id", "device_id")
    if product is not None:
        devices = devices.filter(product=product)
    if not form.is_valid():
        return devices
    data = form.cleaned_data
    if data.get("q"):
        devices = search_devices(devices, data["q"])
    if product is None and data.get("product"):
        devices = devices.filter(product=data["product"])
    if data.get("status"):
        devices = devices.filter(status=data["status"])
    if data.get("enabled") in ("yes", "no"):
        devices = devices.filter(enabled=data["enabled"] == "yes")
    return devices


def _query_without_page(request):
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


@login_required
def index(request):
    return redirect("device-list")


@devices_visible
@require_GET
def product_list(request):
    products = Product.objects.with_device_counts().order_by("product_id")
    rows = [(product, product.device_counts) for product in products]
    return render(
        request,
        "devices/product_list.html",
        {"rows": rows, "statuses": DeviceStatus.choices, "nav": "products"},
    )


@devices_visible
@require_GET
def product_detail(request, product_id):
    product = get_object_or_404(Product.objects.with_device_counts(), product_id=product_id)
    form = DeviceFilterForm(request.GET or None, with_product=False)
    page = _device_page(_filtered_devices(form, product), _page_number(request))
    return render(
        request,
        "devices/product_detail.html",
        {
            "product": product,
            "nav": "products",
            "counts": product.device_counts,
            "statuses": DeviceStatus.choices,
            "form": form,
            "query": _query_without_page(request),
            **page,
        },
    )


@devices_visible
@require_GET
def device_list(request):
    form = DeviceFilterForm(request.GET or None)
    page = _device_page(_filtered_devices(form), _page_number(request))
    return render(
        request,
        "devices/device_list.html",
        {"form": form, "query": _query_without_page(request), "nav": "devices", **page},
    )


def _panel_context(request, device):
    """The parameters panel: options from the query, computed by the JSON endpoint's code."""
    can_see_secret = request.user.has_perm(Permission.VIEW_SECRET)
    params, error = None, None
    try:
        params = device.connection_params(ConnectionOptions.from_query(request.GET))
    except OptionError as problem:
        error = problem
    ca_path = Path(settings.MQTT_CA_FILE)
    default_securemode = "2" if settings.MQTT_TLS_PORT else "3"
    selected = {
        "securemode": request.GET.get("securemode") or default_securemode,
        "signmethod": (request.GET.get("signmethod") or DEFAULT_SIGN_METHOD).lower(),
        "timestamp": request.GET.get("timestamp") or "now",
        "clientId": request.GET.get("clientId", ""),
        "exclusive": request.GET.get("exclusive", "").lower() == "true",
    }
    # The size needs the password's length only (fixed by the sign method): computed first.
    size_and_kit = _size_and_kit_context(device, params, selected, can_see_secret)
    if params is not None and not can_see_secret:
        params = {key: value for key, value in params.items() if key != "mqttPassword"}
    return {
        **size_and_kit,
        "params": params,
        "option_error": error,
        "selected": selected,
        "main_rows": [
            ("host", _("Host")),
            ("port", _("Port")),
            ("mqttClientId", "mqttClientId"),
            ("mqttUsername", "mqttUsername"),
            ("mqttPassword", "mqttPassword"),
        ],
        "detail_keys": (
            "productId", "deviceId", "clientId", "securemode", "signmethod", "timestamp",
            "exclusive",
        ),
        "tls_available": bool(settings.MQTT_TLS_PORT),
        "ca_available": ca_path.is_file(),
        "can_see_secret": can_see_secret,
        "sign_methods": SIGN_METHODS_OFFERED,
    }


def _size_and_kit_context(device, params, selected, can_see_secret):
    """The CONNECT's size for these options (with the buffers it exceeds) and, for those who may
    see secrets, the kit's URL with the same options."""
    if params is None:
        return {}
    size = connect_packet_size(params)
    context = {"connect_size": size, "size_warnings": size_warnings(size)}
    if can_see_secret:
        query = [(key, selected[key]) for key in ("securemode", "signmethod", "timestamp")]
        if selected["clientId"]:
            query.append(("clientId", selected["clientId"]))
        if selected["exclusive"]:
            query.append(("exclusive", "true"))
        context["kit_url"] = (
            reverse("api-device-kit", args=[device.product.product_id, device.device_id])
            + "?" + urlencode(query)
        )
    return context


def _device_context(request, device):
    return {
        "device": device,
        "nav": "devices",
        "can_see_secret": request.user.has_perm(Permission.VIEW_SECRET),
        "can_change": request.user.has_perm(Permission.CHANGE_DEVICE),
    }


@never_cache
@devices_visible
@require_GET
def device_detail(request, product_id, device_id):
    device = _get_device_for_user(request, product_id, device_id)
    panel_open = request.GET.get("panel") == "1" or any(n in request.GET for n in QUERY_NAMES)
    context = _device_context(request, device)
    if panel_open:
        context.update(_panel_context(request, device))
    if request.GET.get("fragment") == "panel":
        return render(request, "devices/_params_panel.html", context)
    context["panel_open"] = panel_open
    return render(request, "devices/device_detail.html", context)


@never_cache
@devices_visible
@require_POST
def device_reveal_secret(request, product_id, device_id):
    """Show the secret once, in the response body (never in a URL), and record who saw it."""
    device = _get_device_for_user(request, product_id, device_id)
    if not request.user.has_perm(Permission.VIEW_SECRET):
        raise PermissionDenied(_("Seeing the secret needs the permission to view device secrets."))
    AuditEvent.record(AuditEvent.Action.REVEAL_SECRET, request.user, [device])
    context = _device_context(request, device)
    context["revealed_secret"] = device.device_secret
    # Switching the language from here goes back to the device page (this URL is POST-only).
    context["language_next"] = _detail_url(device)
    return render(request, "devices/device_detail.html", context)


@devices_visible
@require_http_methods(["GET", "POST"])
def device_rotate_secret(request, product_id, device_id):
    """GET asks for confirmation; POST rotates (audited by the model)."""
    device = _get_device_for_user(request, product_id, device_id)
    if not may_rotate_secret(request.user):
        raise PermissionDenied(_("Rotating a secret needs the permissions to change devices and "
                                 "to view their secrets."))
    if request.method == "POST":
        device.rotate_secret(actor=request.user)
        messages.success(
            request,
            _("The secret was rotated. The broker refuses the device until it is given the new "
              "secret."),
        )
        return redirect(_detail_url(device))
    return render(request, "devices/device_rotate.html", _device_context(request, device))


@devices_visible
@require_POST
def device_set_enabled(request, product_id, device_id):
    device = _get_device_for_user(request, product_id, device_id)
    if not request.user.has_perm(Permission.CHANGE_DEVICE):
        raise PermissionDenied(_("Enabling or disabling devices needs the permission to change "
                                 "devices."))
    enabled = request.POST.get("enabled") == "true"
    device.set_enabled(enabled)
    if enabled:
        messages.success(request, _("The device is enabled; it may connect again."))
    else:
        messages.success(request, _("The device is disabled; the broker refuses it and "
                                    "disconnects it if it is connected."))
    return redirect(_detail_url(device))


@never_cache
@sensitive_post_parameters("mqtt_password")
@devices_visible
@require_http_methods(["GET", "POST"])
def device_debugger(request, product_id, device_id):
    """Paste what a device sent; see why the broker accepts or refuses it.

    POST, because the pasted password must not end up in a URL or a server log.
    """
    device = _get_device_for_user(request, product_id, device_id)
    if not request.user.has_perm(Permission.VIEW_SECRET):
        raise PermissionDenied(_("The signature debugger computes passwords from the device "
                                 "secret; it needs the permission to view device secrets."))
    diagnosis = None
    if request.method == "POST":
        form = DebuggerForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            diagnosis = diagnose(
                device,
                data["mqtt_client_id"],
                data["mqtt_username"],
                data["mqtt_password"],
                data["content"],
            )
    else:
        form = DebuggerForm()
    return render(
        request,
        "devices/device_debugger.html",
        {**_device_context(request, device), "form": form, "diagnosis": diagnosis},
    )


@login_required
@require_GET
def ca_certificate(request):
    """The CA certificate devices need for TLS (securemode=2), when the deployment has one."""
    path = Path(settings.MQTT_CA_FILE)
    if not path.is_file():
        raise Http404(_("This deployment has no CA certificate to download."))
    return FileResponse(
        path.open("rb"), as_attachment=True, filename="ca.pem",
        content_type="application/x-pem-file",
    )


def _detail_url(device):
    return reverse("device-detail", args=[device.product.product_id, device.device_id])

