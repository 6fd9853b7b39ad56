"""The registry: products, devices and what the portal records about them."""

from __future__ import annotations

import functools
import hashlib
import secrets
import string
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import signing
from .choices import (
    BatchSource,
    CheckStatus,
    ConnectionBroker,
    ConnectionKind,
    DeviceStatus,
    Outcome,
    Permission,
    TraceDirection,
    outcome_text,
)
from .fields import EncryptedSecretField, PreviousSecretField
from .options import ConnectionOptions, OptionError

SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 32


def generate_device_secret() -> str:
    return "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def validate_identifier(value):
    """productId / deviceId: 1–64 of letters, digits and - _ . : @ (the spec's decision)."""
    if signing.id_error(value):
        raise ValidationError(
            _("Use 1 to 64 characters: letters, digits and - _ . : @ (no spaces, & or |)."),
            code="invalid_identifier",
        )


# A device's topic space is /sys/{productId}/{deviceId}/# and /{productId}/{deviceId}/# (spec §4):
# with a product called "sys", its devices' second space would cover other products' first.
RESERVED_PRODUCT_IDS = ("sys",)


def validate_product_id(value):
    validate_identifier(value)
    if value in RESERVED_PRODUCT_IDS:
        raise ValidationError(
            _("“%(value)s” is reserved: topics under /%(value)s/ are the devices' system topics.")
            % {"value": value},
            code="reserved_product_id",
        )


class ProductQuerySet(models.QuerySet):
    def with_device_counts(self):
        """Each product with its devices counted by status and disabled, in the one query that
        lists the products (``device_total``, ``<status>_total``, ``disabled_total``)."""
        by_status = {
            f"{status}_total": models.Count("devices", filter=models.Q(devices__status=status))
            for status in DeviceStatus.values
        }
        return self.annotate(
            device_total=models.Count("devices"),
            disabled_total=models.Count("devices", filter=models.Q(devices__enabled=False)),
            **by_status,
        )


class Product(models.Model):
    product_id = models.CharField(
        _("productId"), max_length=64, unique=True, validators=[validate_identifier]
    )
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = ProductQuerySet.as_manager()

    class Meta:
        ordering = ["product_id"]
        verbose_name = _("product")
        verbose_name_plural = _("products")

    def __str__(self):
        return f"{self.name} ({self.product_id})"

    @property
    def device_counts(self) -> dict:
        """{status: n, "total": n, "disabled": n}; needs ``with_device_counts()``."""
        counts = {status: getattr(self, f"{status}_total") for status in DeviceStatus.values}
        return {**counts, "total": self.device_total, "disabled": self.disabled_total}

    def clean(self):
        super().clean()
        if self.product_id in RESERVED_PRODUCT_IDS:
            try:
                validate_product_id(self.product_id)
            except ValidationError as error:
                raise ValidationError({"product_id": error}) from None

    def save(self, *args, **kwargs):
        validate_product_id(self.product_id)
        super().save(*args, **kwargs)


def may_see_devices(user) -> bool:
    """Whether ``user`` may see devices (console and API): all of them with the permission
    ``devices.view_device``, none without it."""
    return user.is_authenticated and user.is_active and user.has_perm(Permission.VIEW_DEVICE)


class DeviceQuerySet(models.QuerySet):
    def for_user(self, user):
        """Devices ``user`` may see (``may_see_devices``)."""
        return self if may_see_devices(user) else self.none()

    def lookup(self, product_id, device_id):
        return self.select_related("product").get(
            product__product_id=product_id, device_id=device_id
        )

    # Status from the broker's connect/disconnect events. Single UPDATE statements, so that a
    # broker (or the EMQX hooks) never overwrites fields a person changed meanwhile.
    def mark_online(self, when=None):
        """A device connected: online, last seen now, first activation if it had none."""
        from django.db.models.functions import Coalesce

        now = when or timezone.now()
        return self.update(
            status=DeviceStatus.ONLINE,
            last_online_at=now,
            first_activated_at=Coalesce("first_activated_at", models.Value(now)),
        )

    def mark_offline(self, when=None):
        """A device disconnected: offline (never back to inactive), last online now."""
        now = when or timezone.now()
        return self.filter(status=DeviceStatus.ONLINE).update(
            status=DeviceStatus.OFFLINE, last_online_at=now
        )

    def set_enabled(self, enabled: bool) -> int:
        """Enable or disable these devices in one UPDATE (the admin action); the ones this
        disables are disconnected from EMQX at once (``devices.emqx``). Returns how many."""
        from .emqx import enabled as emqx_enabled
        from .emqx import queue_kicks

        newly_disabled = []
        if not enabled and emqx_enabled():
            newly_disabled = list(
                self.filter(enabled=True).select_related("product")
                .only("pk", "device_id", "product__product_id")
            )
        count = self.update(enabled=enabled, updated_at=timezone.now())
        queue_kicks(newly_disabled, "disabled")
        return count


class Device(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="devices", verbose_name=_("product")
    )
    device_id = models.CharField(_("deviceId"), max_length=64, validators=[validate_identifier])
    name = models.CharField(_("display name"), max_length=200, blank=True)
    device_secret = EncryptedSecretField(_("deviceSecret"), default=generate_device_secret)
    enabled = models.BooleanField(_("enabled"), default=True)
    status = models.CharField(
        _("status"), max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.INACTIVE
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    last_online_at = models.DateTimeField(_("last online"), null=True, blank=True)
    first_activated_at = models.DateTimeField(_("first activation"), null=True, blank=True)
    secret_rotated_at = models.DateTimeField(_("secret rotated"), null=True, blank=True)
    # The secret before the last rotation (encrypted), so that the connection log and the
    # signature debugger can say "this password is right for the previous secret".
    previous_secret = PreviousSecretField(_("previous secret"), blank=True, default="")
    batch = models.ForeignKey(
        "RegistrationBatch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="devices",
        verbose_name=_("registration batch"),
    )

    objects = DeviceQuerySet.as_manager()

    class Meta:
        ordering = ["product__product_id", "device_id"]
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        constraints = [
            models.UniqueConstraint(
                fields=["product", "device_id"], name="device_id_unique_in_product"
            )
        ]
        indexes = [
            models.Index(fields=["device_id"], name="device_device_id_idx"),
            models.Index(fields=["product", "status"], name="device_product_status_idx"),
            models.Index(fields=["product", "enabled"], name="device_product_enabled_idx"),
            models.Index(fields=["status"], name="device_status_idx"),
            models.Index(fields=["enabled"], name="device_enabled_idx"),
            models.Index(fields=["name"], name="device_name_idx"),
        ]
        permissions = [
            (Permission.VIEW_SECRET_CODENAME, _("Can view device secrets and passwords")),
            (Permission.TRACE_CODENAME, _("Can trace and send device messages")),
        ]

    def __str__(self):
        return f"{self.device_id}&{self.product.product_id}"

    @classmethod
    def from_db(cls, db, field_names, values):
        device = super().from_db(db, field_names, values)
        device._enabled_when_loaded = device.__dict__.get("enabled")
        return device

    def save(self, *args, **kwargs):
        validate_identifier(self.device_id)
        update_fields = kwargs.get("update_fields")
        disabling = (
            getattr(self, "_enabled_when_loaded", None) is True
            and not self.enabled
            and (update_fields is None or "enabled" in update_fields)
        )
        super().save(*args, **kwargs)
        self._enabled_when_loaded = self.enabled
        if disabling:  # whichever way (console, admin form, a script): EMQX disconnects it
            from .emqx import queue_kicks

            queue_kicks([self], "disabled")

    @property
    def mqtt_username(self) -> str:
        """The username it connects with (and, with EMQX's clientid_override, EMQX's client id)."""
        return f"{self.device_id}&{self.product.product_id}"

    @property
    def masked_secret(self):
        return "•" * 8 + self.device_secret[-4:] if self.device_secret else ""

    def connection_params(self, options: ConnectionOptions | None = None) -> dict:
        """The broker address and the three CONNECT fields for ``options``; the one place
        the console, the JSON endpoint and the checks get them from. Raises OptionError."""
        options = options or ConnectionOptions()
        securemode = options.securemode
        if securemode is None:
            securemode = signing.SECURE_MODE_TLS if settings.MQTT_TLS_PORT else signing.SECURE_MODE_TCP
        if securemode == signing.SECURE_MODE_TLS:
            if not settings.MQTT_TLS_PORT:
                raise OptionError(
                    "securemode",
                    _(
                        "This deployment has no TLS listener (PORTAL_MQTT_TLS_PORT is not set); "
                        "use securemode=3 (plain TCP)."
                    ),
                    code="tls_not_configured",
                )
            port = settings.MQTT_TLS_PORT
        else:
            port = settings.MQTT_PORT
        try:
            rendered = signing.render(
                self.product.product_id,
                self.device_id,
                self.device_secret,
                client_id=options.client_id or self.device_id,
                securemode=securemode,
                signmethod=options.signmethod,
                timestamp=options.resolved_timestamp(),
                exclusive=options.exclusive,
            )
        except signing.SigningError as error:
            raise OptionError.from_signing_error(error, options.client_id) from None
        return {
            "productId": rendered.product_id,
            "deviceId": rendered.device_id,
            "clientId": rendered.client_id,
            "securemode": rendered.securemode,
            "signmethod": rendered.signmethod,
            "timestamp": rendered.timestamp,
            "exclusive": rendered.exclusive,
            "host": settings.MQTT_HOST,
            "port": port,
            "mqttClientId": rendered.mqtt_client_id,
            "mqttUsername": rendered.mqtt_username,
            "mqttPassword": rendered.mqtt_password,
        }

    def rotate_secret(self, actor=None, new_secret: str | None = None) -> str:
        """Give the device a new secret (audited). The device is refused until it has it."""
        self.previous_secret = self.device_secret
        self.device_secret = new_secret or generate_device_secret()
        self.secret_rotated_at = timezone.now()
        self.save(
            update_fields=["device_secret", "previous_secret", "secret_rotated_at", "updated_at"]
        )
        AuditEvent.record(AuditEvent.Action.ROTATE_SECRET, actor, [self])
        from .emqx import queue_kicks

        queue_kicks([self], "secret_rotated")
        return self.device_secret

    def set_enabled(self, enabled: bool):
        self.enabled = enabled
        self.save(update_fields=["enabled", "updated_at"])


# How long an accepted CONNECT waits for EMQX's client.connected event, and how long it gives
# rights before that event (EMQX's webhook is asynchronous, its ACL requests are not).
SESSION_PENDING_SECONDS = 300
# How often a process sweeps the pending sessions older than that (record_authenticated).
PENDING_SWEEP_EVERY_S = 10
_last_pending_sweep = float("-inf")
SESSION_PENDING_GRANT_SECONDS = 30


def _db_text(value, length) -> str:
    """A value a client controls, fit for a CharField on every database (no NUL, not too long)."""
    return (value or "").replace("\x00", "")[:length]


def _peerhost_of(peername: str) -> str:
    """``192.0.2.10:50000`` (EMQX's peername, also for IPv6: ``::1:50000``) → ``192.0.2.10``."""
    host, sep, port = peername.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else peername


class BrokerSessionQuerySet(models.QuerySet):
    """The portal's own record of the EMQX sessions it authenticated (README, "EMQX 5"):
    ``/mqtt/auth`` records an accepted CONNECT, EMQX's webhook says when it connected and when it
    ended, and ``/mqtt/acl`` grants rights only to a connection recorded here."""

    def connected(self):
        return self.filter(connected_at__isnull=False)

    def record_authenticated(self, device_pk, username, client_id, peerhost, exclusive,
                             broker_client_id=""):
        now = timezone.now()
        global _last_pending_sweep
        if time.monotonic() - _last_pending_sweep >= PENDING_SWEEP_EVERY_S:
            # Accepted CONNECTs that never became a connection: swept now and then (a write
            # transaction of its own on every CONNECT halved a reconnect storm's rate on SQLite).
            _last_pending_sweep = time.monotonic()
            self.filter(
                connected_at__isnull=True,
                authenticated_at__lt=now - timezone.timedelta(seconds=SESSION_PENDING_SECONDS),
            ).delete()
        from . import hot_queries

        # self.create(…) without the ORM's compile step (a storm of CONNECTs makes one each)
        hot_queries.insert_pending_session(
            device_pk, _db_text(username, 129), _db_text(client_id, 255),
            _db_text(broker_client_id, 255), _db_text(peerhost, 64), exclusive, now,
        )

    def mark_connected(self, username, peername, broker_client_id, when):
        """EMQX says a connection of ``username`` from ``peername`` is up: the accepted CONNECT
        it was, now connected (older connections of the device are over: one per device). None
        when the portal never accepted such a CONNECT."""
        now = timezone.now()
        pending = self.filter(
            username=username,
            connected_at__isnull=True,
            authenticated_at__gte=now - timezone.timedelta(seconds=SESSION_PENDING_SECONDS),
        )
        username, peername = _db_text(username, 129), _db_text(peername, 80)
        if peername:
            host = _db_text(_peerhost_of(peername), 64)
            pending = pending.filter(models.Q(peerhost=host) | models.Q(peerhost=""))
        session = pending.order_by("-authenticated_at", "-pk").first()
        if session is None:
            return None
        session.connected_at = when or now
        session.peername = peername
        if broker_client_id:
            session.broker_client_id = _db_text(broker_client_id, 255)
        session.save(update_fields=["connected_at", "peername", "broker_client_id"])
        newest = self.connected().filter(username=username).order_by("-connected_at", "-pk").first()
        older = self.connected().filter(username=username).exclude(pk=newest.pk)
        # The connections the newest replaced (EMQX takes them over): the hook logs their end.
        session.replaced = list(older) if newest.pk == session.pk else []
        older.delete()
        return session

    def mark_disconnected(self, username, peername, when):
        """EMQX says the connection of ``username`` from ``peername`` ended: forget it. None when
        no such connection (or accepted CONNECT) is recorded."""
        username, peername = _db_text(username, 129), _db_text(peername, 80)
        sessions = self.filter(username=username)
        if peername:
            session = sessions.connected().filter(peername=peername).first()
            if session is None:  # the disconnect overtook its own connected event
                before = when or timezone.now()
                session = (
                    sessions.filter(connected_at__isnull=True,
                                    peerhost__in=[_db_text(_peerhost_of(peername), 64), ""],
                                    authenticated_at__lte=before)
                    .order_by("authenticated_at", "pk").first()
                )
        else:
            session = sessions.connected().order_by("-connected_at", "-pk").first()
        if session is not None:
            session.delete()
        return session

    def authorizing(self, username, client_id, peerhost=None):
        """The live sessions that give ``client_id`` (EMQX's client id: the username with
        ``clientid_override``, else the device's mqttClientId) of ``username`` its rights."""
        recent = timezone.now() - timezone.timedelta(seconds=SESSION_PENDING_GRANT_SECONDS)
        client_id = _db_text(client_id, 255)
        sessions = self.filter(username=_db_text(username, 129)).filter(
            models.Q(connected_at__isnull=False) | models.Q(authenticated_at__gte=recent)
        ).filter(models.Q(broker_client_id=client_id) | models.Q(client_id=client_id))
        if peerhost:
            host = _db_text(peerhost, 64)
            sessions = sessions.filter(models.Q(peerhost=host) | models.Q(peerhost=""))
        return sessions


class BrokerSession(models.Model):
    """A CONNECT the portal accepted for EMQX, and the connection it became (see the queryset)."""

    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, related_name="broker_sessions", verbose_name=_("device")
    )
    username = models.CharField(_("mqttUsername"), max_length=129)
    client_id = models.CharField(_("mqttClientId"), max_length=255)  # the device's own
    broker_client_id = models.CharField(_("EMQX client id"), max_length=255, blank=True)
    peerhost = models.CharField(_("peer address"), max_length=64, blank=True)
    # "host:port", once connected
    peername = models.CharField(_("peer address and port"), max_length=80, blank=True)
    exclusive = models.BooleanField(_("exclusive"), default=False)
    authenticated_at = models.DateTimeField(_("authenticated"), default=timezone.now)
    connected_at = models.DateTimeField(_("connected"), null=True, blank=True)  # EMQX's time

    objects = BrokerSessionQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["username", "connected_at"], name="brokersession_user_idx"),
            models.Index(fields=["connected_at", "authenticated_at"], name="brokersession_age_idx"),
        ]
        verbose_name = _("EMQX session")
        verbose_name_plural = _("EMQX sessions")

    def __str__(self):
        return f"{self.username} ({self.peername or self.peerhost})"


class PendingKick(models.Model):
    """A device EMQX must disconnect (disabled, secret rotated, deleted), kept until EMQX's REST
    API has done it, so that no kick is lost to a failure or a restart (``devices.emqx``)."""

    # EMQX's client id: deviceId&productId
    client_id = models.CharField(_("EMQX client id"), max_length=255)
    reason = models.CharField(_("reason"), max_length=32)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now, db_index=True)
    last_error = models.CharField(_("last error"), max_length=255, blank=True)

    class Meta:
        ordering = ["next_attempt_at", "pk"]
        verbose_name = _("pending EMQX kick")
        verbose_name_plural = _("pending EMQX kicks")

    def __str__(self):
        return f"kick {self.client_id} ({self.reason})"


class RegistrationBatch(models.Model):
    """Devices registered together in the admin, so that their credentials can be exported."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="batches")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=16, choices=BatchSource.choices)
    device_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("registration batch")
        verbose_name_plural = _("registration batches")

    def __str__(self):
        return f"{self.product.product_id} #{self.pk} ({self.device_count})"


class AuditEvent(models.Model):
    """Who saw or changed credentials, when, for which devices. Read-only in the admin."""

    class Action(models.TextChoices):
        REVEAL_SECRET = "reveal_secret", _("Secret revealed")
        EXPORT_CREDENTIALS = "export_credentials", _("Credentials exported")
        ROTATE_SECRET = "rotate_secret", _("Secret rotated")
        DOWNLOAD_KIT = "download_kit", _("Connection kit downloaded")
        SEND_MESSAGE = "send_message", _("Message sent to a device")
        START_TRACE = "start_trace", _("Message trace started")

    action = models.CharField(_("action"), max_length=32, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        verbose_name=_("who"),
    )
    actor_name = models.CharField(_("who (name)"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("when"), default=timezone.now, db_index=True)
    device_count = models.PositiveIntegerField(_("devices"), default=0)
    # "productId/deviceId" strings: devices may be deleted later, the record must stay.
    targets = models.JSONField(_("which devices"), default=list)
    detail = models.CharField(_("detail"), max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")

    def __str__(self):
        return f"{self.get_action_display()} by {self.actor_name or '-'} ({self.device_count})"

    @classmethod
    def record(cls, action, actor, devices, detail=""):
        targets = [f"{d.product.product_id}/{d.device_id}" for d in devices]
        return cls.objects.create(
            action=action,
            actor=actor if actor is not None and actor.is_authenticated else None,
            actor_name=actor.get_username() if actor is not None and actor.is_authenticated else "",
            device_count=len(targets),
            targets=targets,
            detail=detail[:255],
        )


class ApiToken(models.Model):
    """A bearer token for scripts. Only its SHA-256 is stored; the token is shown once."""

    PREFIX = "dpt_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(_("name"), max_length=100, blank=True)
    token_prefix = models.CharField(_("token starts with"), max_length=16, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self):
        return f"{self.token_prefix}… ({self.user})"

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    @classmethod
    def issue(cls, user, name="") -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns (record, plaintext token to show once)."""
        token = cls.PREFIX + secrets.token_urlsafe(32)
        record = cls.objects.create(
            user=user, name=name, token_prefix=token[:12], token_hash=cls.hash_token(token)
        )
        return record, token

    @classmethod
    def authenticate(cls, token: str):
        """The active user a token belongs to, or None."""
        if not token or not token.startswith(cls.PREFIX):
            return None
        record = (
            cls.objects.select_related("user").filter(token_hash=cls.hash_token(token)).first()
        )
        if record is None or not record.user.is_active:
            return None
        now = timezone.now()
        if record.last_used_at is None or (now - record.last_used_at).total_seconds() > 60:
            record.last_used_at = now
            record.save(update_fields=["last_used_at"])
        return record.user


def check_max_runtime():
    """Seconds a running check can legitimately take: three bounded steps plus slack."""
    return 3 * settings.CHECK_STEP_TIMEOUT + 10


@functools.cache
def process_scope() -> str:
    """Where a process id means the same process: the host name and the PID namespace, so that
    containers sharing a host name but not their processes never judge each other's workers."""
    import os
    import socket

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}" if namespace else socket.gethostname()


def runner_name() -> str:
    """A worker's name on the checks it runs: its process scope and its process id."""
    import os

    return f"{process_scope()}:{os.getpid()}"


def _process_alive(pid):
    """Whether process ``pid`` still runs. A zombie (it exited and its parent has not reaped it
    yet, e.g. a killed worker of a supervisor that has not looked) is dead, although
    ``os.kill(pid, 0)`` succeeds for it: where there is a /proc, its state is read there."""
    import os

    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False  # a /proc without this pid: no such process
    except OSError:
        pass
    else:
        # "pid (comm) state ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat.rpartition(b")")[2].split()
        return not fields or fields[0] not in (b"Z", b"X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


INTERRUPTED_REASON = "the worker running this check stopped before it finished"


class ConnectionCheckQuerySet(models.QuerySet):
    def reap_stale(self, now=None):
        """Store as failed ("interrupted") the running checks whose worker died (see
        :meth:`ConnectionCheck.is_interrupted`). Returns how many. Only the worker and the
        commands call this: a page or an API GET computes the same state on read and writes
        nothing."""
        now = now or timezone.now()
        running = self.filter(status=CheckStatus.RUNNING).only("pk", "status", "runner", "started_at")
        stale = [check.pk for check in running if check.is_interrupted(now)]
        from .task_results import settle_task_rows

        if not stale:
            settle_task_rows(now=now)
            return 0
        reaped = self.filter(pk__in=stale, status=CheckStatus.RUNNING)
        task_ids = [task_id for task_id in reaped.values_list("task_id", flat=True) if task_id]
        count = reaped.update(
            status=CheckStatus.FAILED,
            outcome=Outcome.INTERRUPTED,
            reason=INTERRUPTED_REASON,
            finished_at=now,
        )
        # The task rows of these checks (django_tasks_db's) would stay RUNNING for ever.
        settle_task_rows(now=now, task_ids=task_ids)
        return count


class ConnectionCheck(models.Model):
    """One "Test connection": the device's parameters tried against the broker."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="checks")
    options = models.JSONField(default=dict)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    status = models.CharField(
        max_length=16, choices=CheckStatus.choices, default=CheckStatus.QUEUED, db_index=True
    )
    queued_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=32, blank=True)
    connack_code = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    latencies = models.JSONField(default=dict)
    task_id = models.CharField(max_length=64, blank=True)
    # "host:pid" of the worker process running it, so that a check left `running` by a killed
    # worker is recognised at once on the same host (and by its age anywhere).
    runner = models.CharField(max_length=128, blank=True)

    objects = ConnectionCheckQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at"]
        indexes = [models.Index(fields=["device", "-queued_at"], name="check_device_queued_idx")]
        verbose_name = _("connection check")
        verbose_name_plural = _("connection checks")

    def __str__(self):
        return f"check {self.pk} of {self.device_id}: {self.status}"

    def is_interrupted(self, now=None) -> bool:
        """Running, but its worker is gone: at once when that worker ran in this process scope
        (host and PID namespace) and its process is dead, else once older than the longest a
        check can take. Computed when read (healthchecks' ``Check.get_status`` is the model);
        only the worker and the commands store it (``reap_stale``)."""
        if self.status != CheckStatus.RUNNING:
            return False
        runner_scope, _, pid = self.runner.rpartition(":")
        if runner_scope == process_scope() and pid.isdigit() and not _process_alive(int(pid)):
            return True
        cutoff = (now or timezone.now()) - timezone.timedelta(seconds=check_max_runtime())
        return self.started_at is None or self.started_at < cutoff

    def get_status(self):
        return CheckStatus.FAILED if self.is_interrupted() else self.status

    def get_status_display(self):
        return CheckStatus(self.get_status()).label

    def get_outcome(self):
        return Outcome.INTERRUPTED if self.is_interrupted() else self.outcome

    def get_detail(self):
        return INTERRUPTED_REASON if self.is_interrupted() else self.reason

    @property
    def is_finished(self):
        return self.get_status() in (CheckStatus.SUCCEEDED, CheckStatus.FAILED)

    @property
    def message(self):
        """What happened, in the active language ("" while it has not finished)."""
        outcome = self.get_outcome()
        return outcome_text(outcome)[0] if outcome else ""

    @property
    def hint(self):
        outcome = self.get_outcome()
        return outcome_text(outcome)[1] if outcome else ""

    @property
    def latency_ms(self):
        return self.latencies.get("total") if self.latencies else None

    def finish(self, outcome, detail="", connack_code=None, latencies=None):
        """Store a result; only the fields a result changes (background work)."""
        self.status = CheckStatus.SUCCEEDED if outcome == Outcome.ACCEPTED else CheckStatus.FAILED
        self.outcome = outcome
        self.reason = detail
        self.connack_code = connack_code
        self.latencies = latencies or {}
        self.finished_at = timezone.now()
        self.save(
            update_fields=[
                "status", "outcome", "reason", "connack_code", "latencies", "finished_at"
            ]
        )

    def to_dict(self):
        interrupted = self.is_interrupted()
        return {
            "id": self.pk,
            "productId": self.device.product.product_id,
            "deviceId": self.device.device_id,
            "status": CheckStatus.FAILED if interrupted else self.status,
            "outcome": (Outcome.INTERRUPTED if interrupted else self.outcome) or None,
            "reason": self.message or None,
            "hint": self.hint or None,
            "detail": (INTERRUPTED_REASON if interrupted else self.reason) or None,
            "connackCode": self.connack_code,
            "latencyMs": self.latency_ms,
            "latencies": self.latencies,
            "options": self.options,
            "requestedBy": self.requested_by.get_username() if self.requested_by_id else None,
            "queuedAt": self.queued_at.isoformat() if self.queued_at else None,
            "startedAt": self.started_at.isoformat() if self.started_at else None,
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
        }


class ConnectionEvent(models.Model):
    """One CONNECT outcome or end of a session as a broker saw it (devices.connection_log writes
    them). Identical events within a minute are one row with a ``count``. Never a password or a
    secret: ``findings`` are the diagnosis's words, rendered in English and Chinese when the
    event was recorded."""

    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, null=True, blank=True, related_name="connection_events"
    )
    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, null=True, blank=True, related_name="connection_events"
    )
    first_at = models.DateTimeField(_("first"))
    last_at = models.DateTimeField(_("last"))
    kind = models.CharField(_("kind"), max_length=16, choices=ConnectionKind.choices)
    broker = models.CharField(_("broker"), max_length=16, choices=ConnectionBroker.choices)
    peer = models.CharField(_("peer"), max_length=100, blank=True)
    peer_host = models.CharField(max_length=100, blank=True, editable=False)
    transport = models.CharField(_("transport"), max_length=8, blank=True)
    protocol = models.CharField(_("MQTT version"), max_length=16, blank=True)
    client_id = models.CharField(_("clientId"), max_length=200, blank=True)
    # The deviceId the username named (for attempts of unknown devices, shown on the product).
    named_device_id = models.CharField(_("deviceId named"), max_length=64, blank=True)
    connack = models.IntegerField(_("CONNACK"), null=True, blank=True)
    code = models.CharField(_("code"), max_length=40)
    findings = models.JSONField(_("findings"), default=list, blank=True)
    count = models.PositiveIntegerField(_("count"), default=1)
    session_seconds = models.PositiveIntegerField(_("session (s)"), null=True, blank=True)
    taker_peer = models.CharField(_("taken over by (peer)"), max_length=100, blank=True)
    taker_client_id = models.CharField(_("taken over by (clientId)"), max_length=200, blank=True)

    class Meta:
        ordering = ["-last_at", "-id"]
        indexes = [
            models.Index(fields=["device", "-last_at"], name="connevent_device_last_idx"),
            models.Index(fields=["product", "-last_at"], name="connevent_product_last_idx"),
            models.Index(fields=["last_at"], name="connevent_last_idx"),
        ]
        verbose_name = _("connection event")
        verbose_name_plural = _("connection events")

    def __str__(self):
        return f"{self.kind} {self.code} ×{self.count}"

    @property
    def text(self):
        from .choices import connection_event_text

        return connection_event_text(self.kind, self.code)

    @property
    def reason(self):
        return self.text[0]

    def localized_findings(self, language=None):
        """[(level, code, message)] in ``language`` (the active one by default; zh* → zh)."""
        from django.utils import translation

        language = language or translation.get_language() or "en"
        key = "zh" if language.lower().startswith("zh") else "en"
        return [(f.get("level"), f.get("code"), f.get(key) or f.get("en")) for f in self.findings]

    @property
    def hint(self):
        """What to change: the diagnosis's errors when it found some, else the words of the code;
        then its warnings (a clock hours away, an SDK's fixed timestamp)."""
        findings = self.localized_findings()
        errors = [m for level, _code, m in findings if level == "error"]
        warnings = [m for level, _code, m in findings if level == "warning"]
        parts = errors or ([self.text[1]] if self.text[1] else [])
        return " ".join(parts + warnings) or None

    def to_dict(self):
        return {
            "id": self.pk,
            "at": self.last_at.isoformat(),
            "firstAt": self.first_at.isoformat(),
            "kind": self.kind,
            "broker": self.broker,
            "clientId": self.client_id,
            "peer": self.peer,
            "transport": self.transport or None,
            "protocol": self.protocol or None,
            "connack": self.connack,
            "code": self.code,
            "reason": self.reason,
            "hint": self.hint,
            "findings": [
                {"level": level, "code": code, "message": message}
                for level, code, message in self.localized_findings()
            ],
            "count": self.count,
            "sessionSeconds": self.session_seconds,
            "takenOverBy": (
                {"peer": self.taker_peer, "clientId": self.taker_client_id}
                if self.taker_peer or self.taker_client_id else None
            ),
        }


class Trace(models.Model):
    """A person's request to record a device's messages until ``until`` (devices.message_trace).
    The brokers read the running ones; only they write its messages."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="traces")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        verbose_name=_("started by"),
    )
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    until = models.DateTimeField(_("until"))
    stopped = models.BooleanField(_("stopped"), default=False)
    message_count = models.PositiveIntegerField(_("messages"), default=0)
    # EMQX: the temporary rule that sends this device's messages to /mqtt/trace.
    emqx_rule_id = models.CharField(_("EMQX rule"), max_length=100, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["stopped", "until"], name="trace_running_idx")]
        verbose_name = _("message trace")
        verbose_name_plural = _("message traces")

    def __str__(self):
        return f"trace {self.pk} of {self.device_id}"

    @property
    def running(self):
        return not self.stopped and self.until > timezone.now()


class TraceMessage(models.Model):
    """One message a traced device published or was sent: the first 1 KiB of its payload."""

    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="messages")
    at = models.DateTimeField(_("at"))
    direction = models.CharField(_("direction"), max_length=16, choices=TraceDirection.choices)
    topic = models.TextField(_("topic"))
    qos = models.PositiveSmallIntegerField(_("QoS"))
    size = models.PositiveIntegerField(_("size"))
    payload = models.BinaryField(_("payload (first 1 KiB)"))
    # A publish outside the device's topic space: the broker dropped it.
    refused = models.BooleanField(_("refused"), default=False)

    class Meta:
        ordering = ["trace", "id"]
        verbose_name = _("traced message")
        verbose_name_plural = _("traced messages")


class DeviceMessage(models.Model):
    """A message a person sends to a device: the web process writes it, the broker publishes it
    and writes the answer on the same row (devices.message_trace.send_to_device)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="sent_messages")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    topic = models.TextField()
    payload = models.BinaryField()
    qos = models.PositiveSmallIntegerField(default=0)
    # "" while waiting for the broker; then a SendResult value, or "expired" when none answered.
    result = models.CharField(max_length=20, blank=True, db_index=True)
    subscriptions = models.JSONField(default=list, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("message to a device")
        verbose_name_plural = _("messages to devices")


class DeviceSubscriptions(models.Model):
    """The current subscriptions of a device connected to the embedded broker, which writes them
    on SUBSCRIBE, UNSUBSCRIBE and disconnect (the row goes)."""

    device = models.OneToOneField(
        Device, on_delete=models.CASCADE, primary_key=True, related_name="live_subscriptions"
    )
    filters = models.JSONField(default=list)  # [[topic filter, granted QoS], ...]
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("current subscriptions")
        verbose_name_plural = _("current subscriptions")
