import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

WINDOW = timedelta(hours=1)


class PasswordResetRequestQuerySet(models.QuerySet):
    def retry_after(self, email, address, now=None):
        """Seconds until another reset may be asked for this mail address or from this client
        address (``PASSWORD_RESET_PER_HOUR`` each per hour), or None when it may now."""
        now = now or timezone.now()
        limit = settings.PASSWORD_RESET_PER_HOUR
        recent = self.filter(requested_at__gt=now - WINDOW)
        waits = []
        for matching in (recent.filter(email_digest=email_digest(email)),
                         recent.filter(client_address=address) if address else recent.none()):
            times = list(matching.order_by("-requested_at").values_list("requested_at", flat=True)[:limit])
            if len(times) >= limit:
                # Allowed again when the oldest of the last `limit` requests leaves the window.
                waits.append((times[-1] + WINDOW - now).total_seconds())
        return max(1, int(max(waits)) + 1) if waits else None

    def record(self, email, address, now=None):
        now = now or timezone.now()
        self.filter(requested_at__lte=now - WINDOW).delete()
        return self.create(email_digest=email_digest(email), client_address=address, requested_at=now)


def email_digest(email):
    """Counted by a digest: the table need not hold the mail addresses people typed."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class PasswordResetRequest(models.Model):
    """One password-reset request, kept for an hour so that every web worker counts it."""

    email_digest = models.CharField(max_length=64, db_index=True)
    client_address = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = PasswordResetRequestQuerySet.as_manager()
