"""Disconnecting devices from EMQX through its REST API (README, "EMQX 5").

EMQX keeps a connected device connected when the portal disables it or rotates its secret (the
hooks only judge new CONNECTs and each publish or subscribe), so the portal kicks it:
``DELETE /api/v5/clients/{clientid}`` with HTTP Basic ``api key:secret`` (EMQX answers 204, or
404 when no such client is connected; 401 for a wrong key). With ``mqtt.clientid_override =
"username"`` EMQX's client id of a device is its username ``deviceId&productId``.

A kick is a :class:`~devices.models.PendingKick` row first, written with the change that causes
it, and deleted only once EMQX has answered 204 or 404; :func:`send_due_kicks` (a background
task, started when the change commits and again after a failure, with backoff) sends them.
A failure is logged and retried; a restart loses nothing (the row stays, and so does the deferred
task in the database queue; ``python manage.py sendkicks`` sends the due ones by hand or cron).

This module talks HTTP only to EMQX; it lives in ``devices`` because model methods trigger it
(``devices`` never imports ``broker``).
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone
from django_tasks import task

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300


def enabled() -> bool:
    """Whether this deployment told the portal where EMQX's REST API is."""
    return bool(settings.EMQX_API_URL)


def emqx_client_id(device) -> str:
    """EMQX's client id of a device (``mqtt.clientid_override = "username"``)."""
    return device.mqtt_username


@dataclass(frozen=True)
class ApiAnswer:
    status: int | None  # None: no answer (refused, timed out, unreachable)
    detail: str = ""


class EmqxApi:
    """The few calls of EMQX's REST API the portal makes. Never logs the key's secret."""

    def __init__(self, url=None, key=None, secret=None, timeout=None):
        self.url = (url or settings.EMQX_API_URL).rstrip("/")
        key = key or settings.EMQX_API_KEY
        secret = secret or settings.EMQX_API_SECRET
        self._authorization = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self.timeout = timeout or settings.EMQX_API_TIMEOUT

    def _call(self, method, path) -> ApiAnswer:
        request = urllib.request.Request(
            self.url + path, method=method,
            headers={"Authorization": self._authorization, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return ApiAnswer(response.status)
        except urllib.error.HTTPError as error:
            return ApiAnswer(error.code, _error_detail(error))
        except (OSError, ValueError) as error:  # URLError, refused, timeout, bad URL
            return ApiAnswer(None, str(getattr(error, "reason", error))[:200])

    def kick(self, client_id) -> ApiAnswer:
        return self._call("DELETE", "/api/v5/clients/" + quote(client_id, safe=""))

    def is_connected(self, client_id) -> bool | None:
        """True/False from ``GET /api/v5/clients/{clientid}``; None when EMQX did not say."""
        answer = self._call("GET", "/api/v5/clients/" + quote(client_id, safe=""))
        if answer.status == 200:
            return True
        if answer.status == 404:
            return False
        return None


def _error_detail(error):
    try:
        body = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    return f"HTTP {error.code}" + (f" {code}" if isinstance(code, str) else "")


def queue_kicks(devices, reason: str):
    """Record that EMQX must disconnect ``devices`` (once this transaction commits, the task
    sends the kicks). Nothing when EMQX's API is not configured."""
    from .models import PendingKick

    if not enabled():
        return []
    kicks = PendingKick.objects.bulk_create(
        [PendingKick(client_id=emqx_client_id(device), reason=reason) for device in devices]
    )
    if kicks:
        _send_after_commit()
    return kicks


def _send_after_commit():
    """One send per transaction, however many kicks it queued (deleting 10,000 devices)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        entry[1] is _enqueue for entry in connection.run_on_commit
    ):
        return
    transaction.on_commit(_enqueue)


def _enqueue(run_after=None):
    try:
        if run_after is not None:
            if not send_kicks.get_backend().supports_defer:
                return  # `sendkicks` (cron) or the next kick's task picks it up
            send_kicks.using(run_after=run_after).enqueue()
        else:
            send_kicks.enqueue()
    except Exception:  # the rows are kept: a queue failure must not fail the change itself
        logger.exception("Could not queue sending the pending EMQX kicks; they stay pending")


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


def send_due_kicks(now=None, api: EmqxApi | None = None) -> dict:
    """Send every kick that is due; returns counts. Kicks EMQX did not confirm stay, with the
    next attempt after a backoff (1 s, 2 s, 4 s … at most 5 minutes)."""
    from .models import PendingKick

    if not enabled():
        return {"sent": 0, "failed": 0, "pending": PendingKick.objects.count()}
    api = api or EmqxApi()
    now = now or timezone.now()
    sent = failed = 0
    for kick in PendingKick.objects.filter(next_attempt_at__lte=now):
        answer = api.kick(kick.client_id)
        if answer.status in (204, 404):  # 404: not connected (any more): nothing to do
            PendingKick.objects.filter(pk=kick.pk).delete()
            logger.info("EMQX disconnected %s (%s): HTTP %s", kick.client_id, kick.reason,
                        answer.status)
            sent += 1
            continue
        failed += 1
        kick.attempts += 1
        kick.next_attempt_at = now + backoff(kick.attempts)
        kick.last_error = (answer.detail or f"HTTP {answer.status}")[:255]
        kick.save(update_fields=["attempts", "next_attempt_at", "last_error"])
        logger.warning(
            "Could not make EMQX disconnect %s (%s) at %s: %s; attempt %d, retrying at %s",
            kick.client_id, kick.reason, api.url, kick.last_error, kick.attempts,
            kick.next_attempt_at.isoformat(),
        )
    remaining = PendingKick.objects.order_by("next_attempt_at").first()
    return {"sent": sent, "failed": failed,
            "pending": PendingKick.objects.count(),
            "next_attempt_at": remaining.next_attempt_at if remaining else None}


@task()
def send_kicks():
    """The background task: send the due kicks, and come back for the ones that failed."""
    result = send_due_kicks()
    if result.get("next_attempt_at") is not None:
        _enqueue(run_after=max(result["next_attempt_at"], timezone.now()))
    return {key: value for key, value in result.items() if key != "next_attempt_at"}


@receiver(post_delete, sender="devices.Device", dispatch_uid="devices.emqx.kick_deleted")
def kick_deleted_device(sender, instance, **kwargs):
    """A deleted device (one by one or a queryset's delete) is disconnected too."""
    queue_kicks([instance], "deleted")
