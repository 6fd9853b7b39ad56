"""Console forms: the device filters and the signature debugger's input."""

from django import forms
from django.utils.translation import gettext_lazy as _

from devices.models import DeviceStatus, Product


class DeviceFilterForm(forms.Form):
    q = forms.CharField(
        label=_("Search"), required=False, max_length=200,
        widget=forms.TextInput(attrs={"placeholder": _("deviceId or name"), "type": "search"}),
    )
    product = forms.ModelChoiceField(
        label=_("Product"), required=False, queryset=Product.objects.order_by("product_id"),
        to_field_name="product_id", empty_label=_("All products"),
    )
    status = forms.ChoiceField(
        label=_("Status"), required=False,
        choices=[("", _("Any status"))] + list(DeviceStatus.choices),
    )
    enabled = forms.ChoiceField(
        label=_("Enabled"), required=False,
        choices=[("", _("Enabled or not")), ("yes", _("Enabled")), ("no", _("Disabled"))],
    )

    def __init__(self, *args, with_product=True, **kwargs):
        super().__init__(*args, **kwargs)
        if not with_product:
            del self.fields["product"]


class DebuggerForm(forms.Form):
    """Raw text as the device sent it: nothing is stripped here, the debugger reports stray spaces."""

    mqtt_client_id = forms.CharField(
        label="mqttClientId", max_length=1000, strip=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false",
                                      "class": "mono"}),
    )
    mqtt_username = forms.CharField(
        label="mqttUsername", max_length=300, required=False, strip=False,
        help_text=_("Optional: this device's username is assumed."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false",
                                      "class": "mono"}),
    )
    mqtt_password = forms.CharField(
        label="mqttPassword", max_length=300, required=False, strip=False,
        help_text=_("Optional: without it you see the expected passwords."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false",
                                      "class": "mono"}),
    )
    content = forms.CharField(
        label=_("Content the device signed"), max_length=1000, required=False, strip=False,
        help_text=_("Optional: if the device's code logs the string it signs, paste it here."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false",
                                      "class": "mono"}),
    )
