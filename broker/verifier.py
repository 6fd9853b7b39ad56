"""The one verifier between a broker and the registry.

The embedded broker (``broker/embedded.py``) and the EMQX hooks (``broker/hooks.py``) both take
their decisions here and only carry them out: :func:`authenticate_connect` gives one
:class:`ConnectVerdict` per CONNECT (from one parse of its fields), :func:`admit` applies the
one-connection-per-device rule (``exclusive``) to it, and :func:`authorize_topic` decides a
publish or subscribe. A refusal is a stable code from ``devices.choices.REFUSALS``, which carries
the CONNACK it is answered with (MQTT 3.1.1) and its reason code (MQTT 5.0). The signing rules
themselves live in ``devices/signing.py``; this module only finds the device and hands its
secret to them.

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

from devices import hot_queries, signing
from devices.choices import TOPIC_ACTIONS, TRANSPORTS, Refusal, refusal
from devices.topics import topic_allowed, topic_spaces  # noqa: F401 (the topic rule, named here too)

ACTIONS = TOPIC_ACTIONS


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


class NotCached(Exception):
    """``cached_only``: the device is not in the short cache (a query would be needed)."""


def lookup_device(product_id: str, device_id: str, cached_only: bool = False) -> DeviceRecord | None:
    """The device's record from the registry (or the short cache); None when unknown.
    ``cached_only``: raise NotCached rather than query (an event loop's fast path)."""
    key = (product_id, device_id)
    max_age_s = settings.MQTT_AUTH_CACHE_MS / 1000
    if max_age_s > 0:
        record = registry_cache.get(key, max_age_s)
        if record is not None:
            return record
    if cached_only:
        raise NotCached(key)
    row = hot_queries.device_record(product_id, device_id)  # one indexed query, no ORM compile
    if row is None:
        return None
    pk, secret, enabled, secret_rotated_at = row
    record = DeviceRecord(
        pk=pk,
        product_id=product_id,
        device_id=device_id,
        secret=secret,
        enabled=enabled,
        secret_rotated_at=secret_rotated_at,
    )
    if max_age_s > 0:
        registry_cache.put(key, record)
    return record


@dataclass(frozen=True)
class ConnectVerdict:
    """The verifier's answer to one CONNECT. ``reason`` is safe to log (never a secret or a
    password); ``record`` is the device's, only when it was accepted."""

    accepted: bool
    code: str
    reason: str
    parsed: signing.ParsedConnect | None = None
    record: DeviceRecord | None = None

    @property
    def refusal(self) -> Refusal | None:
        return None if self.accepted else refusal(self.code)

    @property
    def connack(self) -> int:
        """The MQTT 3.1.1 CONNACK return code (0 when accepted)."""
        return 0 if self.accepted else self.refusal.connack

    @property
    def reason_code(self) -> int:
        """The MQTT 5.0 CONNACK reason code (0 when accepted)."""
        return 0 if self.accepted else self.refusal.reason_code


def refuse(code: str, reason: str, parsed: signing.ParsedConnect | None = None) -> ConnectVerdict:
    return ConnectVerdict(False, code, reason, parsed)


def authenticate_connect(
    mqtt_client_id, mqtt_username, mqtt_password, transport: str | None = None,
    cached_only: bool = False, record: DeviceRecord | None | type[NotCached] = NotCached,
) -> ConnectVerdict:
    """Verify a CONNECT against the registry, from one parse of its fields.

    Order: the fields' form, then the device's existence, then the signature (and the
    transport and clock rules, all in ``signing.verify_parsed``), and only then whether the
    device is enabled, so that "device disabled" in a log always means a correctly signed device.
    ``cached_only``: raise NotCached instead of looking the device up in the registry.
    ``record``: the device as already looked up (None: unknown), by the embedded broker's
    batch loader (broker/loader.py), instead of a look-up here.
    """
    if transport is not None and transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS} or None, not {transport!r}")
    try:
        parsed = signing.parse_connect(mqtt_client_id, mqtt_username)
    except signing.SigningError as error:
        return refuse(error.code, error.message)
    if record is NotCached:
        record = lookup_device(parsed.product_id, parsed.device_id, cached_only)
    if record is None:
        return refuse(
            "unknown_device",
            f"No device {parsed.device_id!r} in product {parsed.product_id!r}.",
            parsed,
        )
    verdict = signing.verify_parsed(
        parsed,
        mqtt_password if isinstance(mqtt_password, str) else "",
        record.secret,
        transport=transport,
        max_skew_ms=settings.MQTT_MAX_CLOCK_SKEW_MS,
    )
    if not verdict.accepted:
        return refuse(verdict.code, verdict.reason, parsed)
    if not record.enabled:
        return refuse("device_disabled", "The device is disabled in the portal.", parsed)
    return ConnectVerdict(True, "accepted", "accepted", parsed, record)


@dataclass(frozen=True)
class Holder:
    """The connection that holds a device now (whichever broker keeps it)."""

    client_id: str
    exclusive: bool


def admit(verdict: ConnectVerdict, holder: Holder | None) -> ConnectVerdict:
    """One live connection per device (spec §4): an accepted newcomer replaces the holder,
    unless the holder connected with ``exclusive=true``; then the newcomer is refused."""
    if not verdict.accepted or holder is None or not holder.exclusive:
        return verdict
    record = verdict.record
    return refuse(
        "exclusive_connection",
        f"{record.product_id}/{record.device_id} is connected in exclusive mode (clientId "
        f"{holder.client_id!r}); newcomers are refused until it leaves",
        verdict.parsed,
    )


def verify_connect(
    mqtt_client_id, mqtt_username, mqtt_password, transport: str | None = None
) -> ConnectVerdict:
    """Accept or refuse a CONNECT; the verdict's ``reason`` is safe to log."""
    return authenticate_connect(mqtt_client_id, mqtt_username, mqtt_password, transport)


def connack_code(verdict: ConnectVerdict) -> int:
    """The MQTT 3.1.1 CONNACK return code for a verdict."""
    return verdict.connack


def publish_refusal(qos: int, retain: bool) -> str | None:
    """Why the protocol profile (spec §1) refuses a PUBLISH, or None when it does not."""
    if qos == 2:
        return "QoS 2 is not supported (spec §1); publish at QoS 0 or 1."
    if retain:
        return "retained messages are not supported (spec §1); publish without the retain flag."
    return None


@dataclass(frozen=True)
class TopicVerdict:
    """The answer to a publish or subscribe. ``profile`` refusals (QoS 2, retain) break the
    protocol profile (spec §1): the embedded broker closes the connection for them."""

    allowed: bool
    code: str
    reason: str = ""

    @property
    def profile(self) -> bool:
        return self.code in ("qos_not_supported", "retain_not_supported")


def authorize_topic(
    product_id: str, device_id: str, action: str, topic: str, qos: int = 0, retain: bool = False
) -> TopicVerdict:
    """May this device publish to / subscribe to ``topic`` (spec §1 and §4)? The one rule both
    brokers apply; a subscription's QoS is not judged here (it is granted at most 1)."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
    if action == "publish":
        why = publish_refusal(qos, retain)
        if why is not None:
            return TopicVerdict(
                False, "qos_not_supported" if qos == 2 else "retain_not_supported", why
            )
    if not topic_allowed(product_id, device_id, topic):
        spaces = topic_spaces(product_id, device_id)
        return TopicVerdict(
            False,
            "outside_topic_space",
            f"outside the device's topic space {spaces[0]}/# and {spaces[1]}/#",
        )
    return TopicVerdict(True, "allowed")
