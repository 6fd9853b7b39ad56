"""The one verifier between a broker and the registry.

The embedded broker (``devices/broker.py``) and the EMQX hooks (``devices/hooks.py``) both call
:func:`verify_connect` for a CONNECT and :func:`topic_allowed` for a publish or subscribe. The
signing rules themselves live in ``devices/signing.py``; this module only finds the device and
hands its secret to them.

Looked-up devices are kept for at most ``settings.MQTT_AUTH_CACHE_MS`` (≤ 1.5 s), and only
positive look-ups are kept. That is the whole invalidation story: whatever changes a device
(admin, console, API, a raw SQL update, another process), the change is seen within that time,
which keeps the spec's 2-second rule (§4) without signals that a queryset ``update()`` would skip.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from devices import signing

TRANSPORTS = ("tcp", "tls")
ACTIONS = ("publish", "subscribe")
# What a CONNACK (MQTT 3.1.1) says for each refusal code of the verifier.
CONNACK_IDENTIFIER_REJECTED = 0x02
CONNACK_BAD_USERNAME_OR_PASSWORD = 0x04
CONNACK_NOT_AUTHORIZED = 0x05
_IDENTIFIER_CODES = {
    "malformed_client_id", "client_id_too_long", "missing_securemode", "bad_securemode",
    "unsupported_signmethod", "bad_timestamp", "bad_exclusive",
}
_CREDENTIAL_CODES = {"malformed_username", "unknown_device", "bad_signature", "wrong_device"}


@dataclass(frozen=True)
class DeviceRecord:
    """What the broker needs to know about a device; never logged (it holds the secret)."""

    pk: int
    product_id: str
    device_id: str
    secret: str
    enabled: bool
    secret_rotated_at: datetime | None

    def __repr__(self):  # keep the secret out of any accidental log line
        return f"DeviceRecord({self.product_id}/{self.device_id}, enabled={self.enabled})"


class _RegistryCache:
    """(productId, deviceId) → (DeviceRecord, time looked up). Thread-safe; short-lived."""

    def __init__(self):
        self._entries: dict[tuple[str, str], tuple[DeviceRecord, float]] = {}
        self._lock = threading.Lock()

    def get(self, key, max_age_s):
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[1] > max_age_s:
            return None
        return entry[0]

    def put(self, key, record):
        with self._lock:
            if len(self._entries) > 50_000:  # bounded: forget everything rather than grow
                self._entries.clear()
            self._entries[key] = (record, time.monotonic())

    def clear(self):
        with self._lock:
            self._entries.clear()


registry_cache = _RegistryCache()


def lookup_device(product_id: str, device_id: str) -> DeviceRecord | None:
    """The device's record from the registry (or the short cache); None when unknown."""
    from devices.models import Device

    key = (product_id, device_id)
    max_age_s = settings.MQTT_AUTH_CACHE_MS / 1000
    if max_age_s > 0:
        record = registry_cache.get(key, max_age_s)
        if record is not None:
            return record
    device = (
        Device.objects.filter(product__product_id=product_id, device_id=device_id)
        .only("pk", "device_secret", "enabled", "secret_rotated_at")
        .first()
    )
    if device is None:
        return None
    record = DeviceRecord(
        pk=device.pk,
        product_id=product_id,
        device_id=device_id,
        secret=device.device_secret,
        enabled=device.enabled,
        secret_rotated_at=device.secret_rotated_at,
    )
    if max_age_s > 0:
        registry_cache.put(key, record)
    return record


def authenticate_connect(
    mqtt_client_id, mqtt_username, mqtt_password, transport: str | None = None
) -> tuple[signing.Verdict, DeviceRecord | None]:
    """Verify a CONNECT against the registry; the record is returned only when accepted.

    Order: the fields' form, then the device's existence, then the signature (and the
    transport and clock rules, all in ``signing.verify``), and only then whether the device is
    enabled, so that "device disabled" in a log always means a correctly signed device.
    """
    if transport is not None and transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS} or None, not {transport!r}")
    try:
        parsed = signing.parse_connect(mqtt_client_id, mqtt_username)
    except signing.SigningError as error:
        return signing.Verdict(False, error.code, error.message), None
    record = lookup_device(parsed.product_id, parsed.device_id)
    if record is None:
        return (
            signing.Verdict(
                False,
                "unknown_device",
                f"No device {parsed.device_id!r} in product {parsed.product_id!r}.",
                parsed,
            ),
            None,
        )
    verdict = signing.verify(
        mqtt_client_id,
        mqtt_username,
        mqtt_password if isinstance(mqtt_password, str) else "",
        record.secret,
        product_id=record.product_id,
        device_id=record.device_id,
        transport=transport,
        max_skew_ms=settings.MQTT_MAX_CLOCK_SKEW_MS,
    )
    if not verdict.accepted:
        return verdict, None
    if not record.enabled:
        return (
            signing.Verdict(
                False, "device_disabled", "The device is disabled in the portal.", verdict.parsed
            ),
            None,
        )
    return verdict, record


def verify_connect(
    mqtt_client_id, mqtt_username, mqtt_password, transport: str | None = None
) -> signing.Verdict:
    """Accept or refuse a CONNECT; the verdict's ``reason`` is safe to log."""
    return authenticate_connect(mqtt_client_id, mqtt_username, mqtt_password, transport)[0]


def connack_code(verdict: signing.Verdict) -> int:
    """The MQTT 3.1.1 CONNACK return code for a refusal."""
    if verdict.code in _IDENTIFIER_CODES:
        return CONNACK_IDENTIFIER_REJECTED
    if verdict.code in _CREDENTIAL_CODES:
        return CONNACK_BAD_USERNAME_OR_PASSWORD
    return CONNACK_NOT_AUTHORIZED


def topic_spaces(product_id: str, device_id: str) -> tuple[str, str]:
    """The two topic prefixes a device owns (spec §4, decision)."""
    return (f"/sys/{product_id}/{device_id}", f"/{product_id}/{device_id}")


def topic_allowed(product_id: str, device_id: str, topic: str) -> bool:
    """Whether a topic (publish) or topic filter (subscribe) lies inside the device's space.

    Inside means: the prefix itself, or anything below it. Wildcards are allowed only below
    the prefix, so ``/pk/dev/#`` is inside but ``/pk/+/x`` and ``#`` are not.
    """
    if not isinstance(topic, str) or topic == "":
        return False
    for prefix in topic_spaces(product_id, device_id):
        if topic == prefix or topic.startswith(prefix + "/"):
            return True
    return False


def publish_refusal(qos: int, retain: bool) -> str | None:
    """Why the protocol profile (spec §1) refuses a PUBLISH, or None when it does not."""
    if qos == 2:
        return "QoS 2 is not supported (spec §1); publish at QoS 0 or 1."
    if retain:
        return "retained messages are not supported (spec §1); publish without the retain flag."
    return None
