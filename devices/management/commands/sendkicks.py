"""Send the pending EMQX kicks that are due (the background task does this on its own)."""

from django.core.management.base import BaseCommand, CommandError

from devices import emqx


class Command(BaseCommand):
    help = (
        "Make EMQX disconnect the devices that were disabled, rotated or deleted and are not yet "
        "confirmed disconnected (PORTAL_EMQX_API_URL). The worker does this by itself; this is "
        "for cron or by hand. Exits 1 when some could not be sent."
    )

    def handle(self, *args, **options):
        if not emqx.enabled():
            raise CommandError("PORTAL_EMQX_API_URL is not set: there is no EMQX to kick devices from.")
        result = emqx.send_due_kicks()
        self.stdout.write(
            f"Sent {result['sent']} kicks, {result['failed']} failed, {result['pending']} pending."
        )
        if result["failed"]:
            raise CommandError("Some kicks failed; they stay pending and are retried (see the log).")
