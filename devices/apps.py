from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = _("Device registry")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import emqx  # noqa: F401  (its post_delete receiver kicks deleted devices)
