"""The admin's forms: one device, a batch generated from a prefix or uploaded as CSV, an API
token. (The console's forms are in console/forms.py.)"""

from django import forms
from django.utils.translation import gettext_lazy as _

from . import batch as batches
from .models import ApiToken, Device, Product, generate_device_secret

SECRET_MAX_LENGTH = 128


def _clean_given_secret(value):
    if not value:
        return generate_device_secret()
    if len(value) > SECRET_MAX_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise forms.ValidationError(
            _("Use at most %(max)d printable characters without spaces, or leave it empty."),
            params={"max": SECRET_MAX_LENGTH},
        )
    return value


class DeviceAddForm(forms.ModelForm):
    """Adding one device: its secret is generated unless one is given."""

    device_secret = forms.CharField(
        label=_("deviceSecret"),
        required=False,
        max_length=SECRET_MAX_LENGTH,
        widget=forms.TextInput(attrs={"autocomplete": "off", "size": 40}),
        help_text=_("Leave empty to generate a random secret of 32 letters and digits."),
    )

    class Meta:
        model = Device
        fields = ["product", "device_id", "name", "device_secret", "enabled"]

    def clean_device_secret(self):
        return _clean_given_secret(self.cleaned_data.get("device_secret", ""))


class GenerateBatchForm(forms.Form):
    product = forms.ModelChoiceField(Product.objects.all(), label=_("product"))
    prefix = forms.CharField(
        label=_("deviceId prefix"),
        required=False,
        max_length=63,
        help_text=_("Letters, digits and - _ . : @, e.g. sensor-"),
    )
    start = forms.IntegerField(label=_("first number"), min_value=0, initial=1)
    count = forms.IntegerField(
        label=_("number of devices"), min_value=1, max_value=batches.MAX_BATCH_SIZE, initial=10
    )
    width = forms.IntegerField(
        label=_("zero-padded width"),
        min_value=0,
        max_value=batches.MAX_WIDTH,
        initial=4,
        help_text=_("4 gives 0001, 0002, …; 0 gives 1, 2, …"),
    )
    name_prefix = forms.CharField(
        label=_("name prefix (optional)"),
        required=False,
        max_length=100,
        help_text=_("When given, each device is named this prefix and its number."),
    )


class UploadBatchForm(forms.Form):
    product = forms.ModelChoiceField(Product.objects.all(), label=_("product"))
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_(
            "One device a line: deviceId, then optionally a name. A header line is optional. "
            "UTF-8, with or without BOM."
        ),
    )


class ApiTokenAddForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]
        labels = {"user": _("user")}
