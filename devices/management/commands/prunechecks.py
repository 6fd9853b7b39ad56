"""Delete finished connection checks older than the retention (PORTAL_CHECK_RETENTION_DAYS), and
the background worker's finished task rows with them (django_tasks_db keeps them for ever), and
connection log events older than PORTAL_CONNECTION_LOG_DAYS, and message traces that ended more than
PORTAL_TRACE_RETENTION_DAYS ago."""

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from devices import connection_log, message_trace
from devices.models import CheckStatus, ConnectionCheck
from devices.task_results import prune_task_rows, settle_task_rows


class Command(BaseCommand):
    help = (
        "Delete finished connection checks and finished background task rows older than "
        "PORTAL_CHECK_RETENTION_DAYS days (queued and running ones are never deleted; those of "
        "dead workers are failed first), and connection log events older than "
        "PORTAL_CONNECTION_LOG_DAYS days. Run it daily, e.g. from cron."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=None,
            help="Keep this many days instead of the setting (at least 1).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would go.")

    def handle(self, *args, days, dry_run, **options):
        days = settings.CHECK_RETENTION_DAYS if days is None else days
        if days < 1:
            from django.core.management.base import CommandError

            raise CommandError(f"--days must be at least 1, not {days}.")
        ConnectionCheck.objects.reap_stale()
        settle_task_rows(force=True)
        cutoff = timezone.now() - timezone.timedelta(days=days)
        old = ConnectionCheck.objects.filter(
            status__in=[CheckStatus.SUCCEEDED, CheckStatus.FAILED], finished_at__lt=cutoff
        )
        log_days = settings.CONNECTION_LOG_DAYS
        if dry_run:
            self.stdout.write(f"{old.count()} connection checks older than {days} days would be deleted.")
            self.stdout.write(
                f"{prune_task_rows(cutoff, dry_run=True)} finished task rows older than {days} "
                "days would be deleted."
            )
            return
        deleted, _ = old.delete()
        self.stdout.write(f"Deleted {deleted} connection checks older than {days} days.")
        tasks = prune_task_rows(cutoff)
        self.stdout.write(f"Deleted {tasks} finished task rows older than {days} days.")
        events = connection_log.prune(log_days)
        self.stdout.write(f"Deleted {events} connection log events older than {log_days} days.")
        trace_days = settings.TRACE_RETENTION_DAYS
        traces = message_trace.prune(trace_days)
        self.stdout.write(f"Deleted {traces} message traces (with their messages) that ended more "
                          f"than {trace_days} days ago.")
