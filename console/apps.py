from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsoleConfig(AppConfig):
    """The browser console: pages, forms and template tags around the registry. No models."""

    name = "console"
    verbose_name = _("Console")
