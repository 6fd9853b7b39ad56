"""The admin: the registry, batch registration, credentials export and the audit trail.

Secrets never appear in an admin page unasked: the change form shows a masked value, revealing
it is a POST that is audited, and exports are downloads (never a URL holding a secret). The batch
logic lives in ``devices/batch.py``; the views here parse a form, call it and render.
"""

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters

from . import admin_actions
from . import batch as batches
from .choices import DEVICE_STATUS_COLOURS, BatchSource, Permission, may_rotate_secret
from .forms import (
    ApiTokenAddForm,
    DeviceAddForm,
    GenerateBatchForm,
    UploadBatchForm,
)
from .models import (
    ApiToken,
    AuditEvent,
    BrokerSession,
    ConnectionCheck,
    ConnectionEvent,
    Device,
    PendingKick,
    Product,
    RegistrationBatch,
)


def _no_store(response):
    """Pages and files holding secrets must not be kept by the browser or a proxy."""
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _csv_download(content, filename):
    response = HttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return _no_store(response)


XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _xlsx_download(content, filename):
    response = HttpResponse(content, content_type=XLSX_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return _no_store(response)


# -- products --------------------------------------------------------------------------------------


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = [
        "product_id",
        "name",
        "device_total",
        "online_total",
        "offline_total",
        "inactive_total",
        "created_at",
        "register_link",
    ]
    search_fields = ["product_id", "name"]
    readonly_fields = ["created_at", "updated_at"]

    def get_queryset(self, request):
        # Every count of the list in the one query that lists the products.
        return super().get_queryset(request).with_device_counts()

    def get_readonly_fields(self, request, obj=None):
        # A productId is part of every device's credentials: fixed once created.
        return [*self.readonly_fields, "product_id"] if obj else self.readonly_fields

    @admin.display(description=_("devices"), ordering="device_total")
    def device_total(self, obj):
        return obj.device_total

    @admin.display(description=_("online"), ordering="online_total")
    def online_total(self, obj):
        return obj.online_total

    @admin.display(description=_("offline"), ordering="offline_total")
    def offline_total(self, obj):
        return obj.offline_total

    @admin.display(description=_("inactive"), ordering="inactive_total")
    def inactive_total(self, obj):
        return obj.inactive_total

    @admin.display(description=_("register"))
    def register_link(self, obj):
        url = reverse("admin:devices_device_batch") + f"?product={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, gettext("Register devices…"))


# -- devices ---------------------------------------------------------------------------------------


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    add_form = DeviceAddForm
    list_display = [
        "device_id",
        "product",
        "name",
        "status_badge",
        "enabled",
        "last_online_at",
        "created_at",
    ]
    list_display_links = ["device_id"]
    list_filter = ["product", "enabled", "status"]
    search_fields = ["device_id", "name", "product__product_id"]
    list_select_related = ["product"]
    # The index of (product, device_id) serves this order; no join on the product.
    ordering = ["product_id", "device_id"]
    list_per_page = 100
    show_full_result_count = False
    actions = [
        "enable_devices",
        "disable_devices",
        "export_credentials",
        "export_credentials_xlsx",
        admin_actions.test_connection,
        admin_actions.test_connection_force,
    ]
    change_fields = [
        "product",
        "device_id",
        "name",
        "enabled",
        "secret",
        "status",
        "last_online_at",
        "first_activated_at",
        "secret_rotated_at",
        "batch",
        "created_at",
        "updated_at",
    ]
    change_readonly_fields = [
        "product",
        "device_id",
        "secret",
        "status",
        "last_online_at",
        "first_activated_at",
        "secret_rotated_at",
        "batch",
        "created_at",
        "updated_at",
    ]

    # The add form takes a secret; the change form never holds one (not even hidden).
    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(self.add_form.Meta.fields)
        return self._secret_fields_for(request, self.change_fields)

    def get_readonly_fields(self, request, obj=None):
        # productId and deviceId are part of the device's credentials: fixed once created.
        return [] if obj is None else self._secret_fields_for(request, self.change_readonly_fields)

    def _secret_fields_for(self, request, fields):
        """Even the last characters of a secret are for those who may see secrets."""
        if self.has_view_device_secret_permission(request):
            return list(fields)
        return ["secret_hidden" if name == "secret" else name for name in fields]

    def has_view_device_secret_permission(self, request):
        return request.user.has_perm(Permission.VIEW_SECRET)

    def has_rotate_secret_permission(self, request, obj=None):
        return self.has_change_permission(request, obj) and may_rotate_secret(request.user)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj):
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 8px;border-radius:8px">{}</span>',
            DEVICE_STATUS_COLOURS.get(obj.status, "#6c757d"),
            obj.get_status_display(),
        )

    @admin.display(description=_("deviceSecret"))
    def secret(self, obj):
        # Masked only; "Reveal secret" and "Rotate secret" are buttons of the change form.
        return format_html("<code>{}</code>", obj.masked_secret) if obj and obj.pk else "-"

    @admin.display(description=_("deviceSecret"))
    def secret_hidden(self, obj):
        return format_html("<code>{}</code>", "•" * 8)

    @method_decorator(sensitive_post_parameters("device_secret"))
    def add_view(self, request, form_url="", extra_context=None):
        # A given secret must not reach an error report or a log of the request.
        return super().add_view(request, form_url, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_reveal_secret": self.has_view_device_secret_permission(request),
            "can_rotate_secret": self.has_rotate_secret_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    # -- actions -----------------------------------------------------------------------------

    def _set_enabled(self, request, queryset, enabled):
        # One UPDATE (updated_at included); the disabled ones are kicked from EMQX too.
        count = queryset.set_enabled(enabled)
        message = (
            ngettext("Enabled %(count)d device.", "Enabled %(count)d devices.", count)
            if enabled
            else ngettext("Disabled %(count)d device.", "Disabled %(count)d devices.", count)
        )
        self.message_user(request, message % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Enable the selected devices"), permissions=["change"])
    def enable_devices(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description=_("Disable the selected devices"), permissions=["change"])
    def disable_devices(self, request, queryset):
        self._set_enabled(request, queryset, False)

    @admin.action(
        description=_("Export credentials (CSV) of the selected devices"),
        permissions=["view_device_secret"],
    )
    def export_credentials(self, request, queryset):
        if not self.has_view_device_secret_permission(request):
            raise PermissionDenied
        devices = queryset.select_related("product").order_by("product_id", "device_id")
        content = batches.export_credentials(devices, request.user, detail="admin action")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        return _csv_download(content, f"credentials-{stamp}.csv")

    @admin.action(
        description=_("Export credentials (spreadsheet, every cell text) of the selected devices"),
        permissions=["view_device_secret"],
    )
    def export_credentials_xlsx(self, request, queryset):
        if not self.has_view_device_secret_permission(request):
            raise PermissionDenied
        devices = queryset.select_related("product").order_by("product_id", "device_id")
        content = batches.export_credentials_xlsx(devices, request.user, detail="admin action")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        return _xlsx_download(content, f"credentials-{stamp}.xlsx")

    # -- extra views -------------------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("batch/", wrap(self.batch_view), name="devices_device_batch"),
            path(
                "batch/<int:batch_id>/",
                wrap(self.batch_result_view),
                name="devices_device_batch_result",
            ),
            path(
                "batch/<int:batch_id>/credentials.csv",
                wrap(self.batch_credentials_view),
                name="devices_device_batch_credentials",
            ),
            path(
                "batch/<int:batch_id>/credentials.xlsx",
                wrap(self.batch_credentials_xlsx_view),
                name="devices_device_batch_credentials_xlsx",
            ),
            path("<int:object_id>/secret/", wrap(self.secret_view), name="devices_device_secret"),
            path(
                "<int:object_id>/rotate-secret/",
                wrap(self.rotate_secret_view),
                name="devices_device_rotate_secret",
            ),
            *super().get_urls(),
        ]

    def _context(self, request, title, **extra):
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            **extra,
        }

    def batch_view(self, request):
        """Register many devices: generate them from a prefix, or upload a CSV of deviceIds."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        product_initial = (
            {"product": request.GET.get("product")} if request.GET.get("product") else {}
        )
        generate_form = GenerateBatchForm(prefix="generate", initial=product_initial)
        upload_form = UploadBatchForm(prefix="upload", initial=product_initial)
        if request.method == "POST":
            if "upload-product" in request.POST:
                upload_form = UploadBatchForm(request.POST, request.FILES, prefix="upload")
                form, source = upload_form, BatchSource.CSV
            else:
                generate_form = GenerateBatchForm(request.POST, prefix="generate")
                form, source = generate_form, BatchSource.GENERATED
            if form.is_valid():
                data = form.cleaned_data
                try:
                    if source == BatchSource.CSV:
                        rows = batches.rows_from_csv(data["file"].read())
                    else:
                        rows = batches.generated_rows(
                            data["prefix"],
                            data["count"],
                            start=data["start"],
                            width=data["width"],
                            name_prefix=data["name_prefix"],
                        )
                    batch = batches.register_batch(data["product"], rows, request.user, source)
                except batches.BatchError as error:
                    form.add_error(None, [gettext("Nothing was registered."), *error.lines()])
                else:
                    self.message_user(
                        request,
                        ngettext(
                            "Registered %(count)d device in product %(product)s.",
                            "Registered %(count)d devices in product %(product)s.",
                            batch.device_count,
                        )
                        % {"count": batch.device_count, "product": batch.product.product_id},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:devices_device_batch_result", args=[batch.pk])
                    )
        context = self._context(
            request,
            gettext("Register devices in batch"),
            generate_form=generate_form,
            upload_form=upload_form,
            max_batch_size=batches.MAX_BATCH_SIZE,
        )
        return TemplateResponse(request, "admin/devices/device/batch_register.html", context)

    def batch_result_view(self, request, batch_id):
        if not (self.has_add_permission(request) or self.has_view_permission(request)):
            raise PermissionDenied
        batch = get_object_or_404(RegistrationBatch.objects.select_related("product"), pk=batch_id)
        context = self._context(
            request,
            gettext("Registration batch %(id)d") % {"id": batch.pk},
            batch=batch,
            sample=batch.devices.order_by("pk").values_list("device_id", "name")[:10],
            can_export=self.has_view_device_secret_permission(request),
        )
        return TemplateResponse(request, "admin/devices/device/batch_result.html", context)

    def batch_credentials_view(self, request, batch_id):
        """The batch's ``productId,deviceId,deviceSecret`` file (POST only, audited)."""
        return self._batch_credentials(request, batch_id, batches.export_credentials,
                                       _csv_download, "csv")

    def batch_credentials_xlsx_view(self, request, batch_id):
        """The same credentials as a workbook of text cells, for people (POST only, audited)."""
        return self._batch_credentials(request, batch_id, batches.export_credentials_xlsx,
                                       _xlsx_download, "xlsx")

    def _batch_credentials(self, request, batch_id, export, download, extension):
        if not self.has_view_device_secret_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(
                reverse("admin:devices_device_batch_result", args=[batch_id])
            )
        batch = get_object_or_404(RegistrationBatch.objects.select_related("product"), pk=batch_id)
        content = export(
            batches.batch_devices(batch), request.user, detail=f"registration batch {batch.pk}"
        )
        return download(
            content, f"credentials-{batch.product.product_id}-batch{batch.pk}.{extension}"
        )

    def secret_view(self, request, object_id):
        """Reveal a device's secret: the page asks, a POST shows it and records who saw it."""
        if not self.has_view_device_secret_permission(request):
            raise PermissionDenied
        device = get_object_or_404(Device.objects.select_related("product"), pk=object_id)
        revealed = None
        if request.method == "POST":
            revealed = device.device_secret
            AuditEvent.record(AuditEvent.Action.REVEAL_SECRET, request.user, [device], "admin")
        context = self._context(
            request,
            gettext("Secret of %(device)s") % {"device": device.device_id},
            device=device,
            original=device,
            revealed=revealed,
        )
        response = TemplateResponse(request, "admin/devices/device/secret.html", context)
        return _no_store(response)

    def rotate_secret_view(self, request, object_id):
        """Give a device a new secret (audited by Device.rotate_secret); the page asks first."""
        device = get_object_or_404(Device.objects.select_related("product"), pk=object_id)
        # As in the console (README): rotating needs the change and the view-secret permission.
        if not self.has_rotate_secret_permission(request, device):
            raise PermissionDenied
        if request.method == "POST":
            device.rotate_secret(actor=request.user)
            self.message_user(
                request,
                gettext(
                    "Device %(device)s has a new secret. It is refused by the broker until it "
                    "uses the new one."
                )
                % {"device": device.device_id},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:devices_device_change", args=[device.pk]))
        context = self._context(
            request,
            gettext("Rotate the secret of %(device)s") % {"device": device.device_id},
            device=device,
            original=device,
        )
        return TemplateResponse(request, "admin/devices/device/rotate_secret.html", context)


# -- registration batches, audit, tokens -----------------------------------------------------------


class SourceFilter(admin.SimpleListFilter):
    """The batch's source, named in the reader's language (the column holds fixed words)."""

    title = _("source")
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return BatchSource.choices

    def queryset(self, request, queryset):
        return queryset.filter(source=self.value()) if self.value() else queryset


class ProductFilter(admin.RelatedFieldListFilter):
    """By product, with a translated title (the batch's product field has no translated name)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = _("product")


class RecordAdmin(admin.ModelAdmin):
    """A record of what happened (a batch, an audit event): read here, never added, edited or
    deleted, so that the trail stays true."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RegistrationBatch)
class RegistrationBatchAdmin(RecordAdmin):
    # Display methods rather than the bare fields: the model's fields carry no translated names.
    list_display = [
        "number",
        "batch_product",
        "batch_source",
        "devices",
        "registered_by",
        "registered_at",
        "credentials",
    ]
    list_display_links = ["number"]
    fields = readonly_fields = [
        "number", "batch_product", "batch_source", "devices", "registered_by", "registered_at",
        "credentials",
    ]
    list_filter = [SourceFilter, ("product", ProductFilter)]
    list_select_related = ["product", "created_by"]
    search_fields = ["product__product_id"]

    @admin.display(description=_("batch"), ordering="id")
    def number(self, obj):
        return obj.pk

    @admin.display(description=_("product"), ordering="product__product_id")
    def batch_product(self, obj):
        return obj.product

    @admin.display(description=_("source"), ordering="source")
    def batch_source(self, obj):
        return obj.get_source_display()

    @admin.display(description=_("devices"), ordering="device_count")
    def devices(self, obj):
        return obj.device_count

    @admin.display(description=_("registered by"), ordering="created_by")
    def registered_by(self, obj):
        return obj.created_by or "-"

    @admin.display(description=_("registered"), ordering="created_at")
    def registered_at(self, obj):
        return obj.created_at

    @admin.display(description=_("credentials"))
    def credentials(self, obj):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:devices_device_batch_result", args=[obj.pk]),
            gettext("Download CSV…"),
        )


@admin.register(AuditEvent)
class AuditEventAdmin(RecordAdmin):
    list_display = [
        "created_at",
        "action",
        "actor_name",
        "device_count",
        "targets_summary",
        "detail",
    ]
    list_filter = ["action"]
    search_fields = ["actor_name", "targets"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description=_("which devices"))
    def targets_summary(self, obj):
        shown = ", ".join(obj.targets[:3])
        more = len(obj.targets) - 3
        if more > 0:
            shown += " " + gettext("and %(count)d more") % {"count": more}
        return shown


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made here (or by ``createapitoken``); the token is shown once, then only its hash
    is kept. Deleting a token revokes it."""

    list_display = ["token_prefix", "owner", "name", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name", "token_prefix"]
    form = ApiTokenAddForm

    def get_fields(self, request, obj=None):
        return (
            ["user", "name"]
            if obj is None
            else ["owner", "name", "token_prefix", "created_at", "last_used_at"]
        )

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["owner", "token_prefix", "created_at", "last_used_at"]

    @admin.display(description=_("user"), ordering="user__username")
    def owner(self, obj):
        return obj.user

    # A token acts as its user: staff who are not superusers make and see only their own, so
    # that the add-token permission cannot become another user's (or a superuser's) powers.
    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = get_user_model().objects.filter(pk=request.user.pk)
            kwargs["initial"] = request.user.pk
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        record, token = ApiToken.issue(obj.user, obj.name)
        for field in ("pk", "token_prefix", "token_hash", "created_at"):
            setattr(obj, field, getattr(record, field))
        obj._state = record._state
        obj.plaintext_token = token

    def response_add(self, request, obj, post_url_continue=None):
        """Show the token on this one page (not in a message, which would sit in a cookie)."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("API token created"),
            "token": obj,
            "plaintext_token": obj.plaintext_token,
        }
        response = TemplateResponse(request, "admin/devices/apitoken/created.html", context)
        return _no_store(response)


# -- connection checks -----------------------------------------------------------------------


@admin.register(ConnectionCheck)
class ConnectionCheckAdmin(admin.ModelAdmin):
    list_display = [
        "id", "device", "shown_status", "result", "connack_code", "latency", "queued_at",
        "finished_at", "requested_by",
    ]
    list_filter = ["status", "outcome"]
    list_select_related = ["device__product", "requested_by"]
    search_fields = ["device__device_id", "device__product__product_id"]
    readonly_fields = [f.name for f in ConnectionCheck._meta.fields]

    @admin.display(description=_("status"), ordering="status")
    def shown_status(self, check):
        return check.get_status_display()  # "failed" at once for a check whose worker died

    @admin.display(description=_("result"))
    def result(self, check):
        return check.message or "…"

    @admin.display(description=_("latency (ms)"))
    def latency(self, check):
        return "" if check.latency_ms is None else f"{check.latency_ms:.0f}"

    def has_add_permission(self, request):
        return False  # checks start from a device ("Test connection"), never from an empty form

    def has_change_permission(self, request, obj=None):
        return False


# -- EMQX ------------------------------------------------------------------------------------------


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Kept by the portal itself: seen and deleted (a stale record), never written by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BrokerSession)
class BrokerSessionAdmin(_ReadOnlyAdmin):
    list_display = ["username", "client_id", "peername", "peerhost", "exclusive",
                    "authenticated_at", "connected_at"]
    list_filter = ["exclusive"]
    search_fields = ["username", "client_id"]


@admin.register(PendingKick)
class PendingKickAdmin(_ReadOnlyAdmin):
    list_display = ["client_id", "reason", "created_at", "attempts", "next_attempt_at",
                    "last_error"]
    search_fields = ["client_id"]


# -- the connection log ---------------------------------------------------------------------


@admin.register(ConnectionEvent)
class UnattributedConnectionEventAdmin(RecordAdmin):
    """The staff-only connection log: attempts that name no known product (a device's own and a
    product's unknown deviceIds are on their console pages, for devices.view_device)."""

    list_display = ["last_at", "kind", "code", "count", "client_id", "peer", "broker", "transport",
                    "connack"]
    list_filter = ["kind", "code", "broker"]
    search_fields = ["client_id", "peer_host"]
    fields = ["first_at", "last_at", "kind", "code", "count", "broker", "peer", "transport",
              "protocol", "client_id", "connack"]
    readonly_fields = fields
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).filter(product=None, device=None)

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request):
        return self.has_view_permission(request)
