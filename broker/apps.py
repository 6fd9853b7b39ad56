from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BrokerConfig(AppConfig):
    """The broker side: the verifier, the embedded broker and the EMQX hooks. No models."""

    name = "broker"
    verbose_name = _("Broker side")
