"""Test the connection of many devices at once, for scheduled sweeps (cron).

The checks are queued in bulk as fleet tasks (``devices.tasks.request_fleet_checks``: the
background worker runs many checks of a task at once, with the same rules as any check); this
command waits for them, draws a progress bar on a terminal (one line per result otherwise), prints a summary and
exits with status 1 when any check failed, so that cron mails the failures.
"""

import time
from collections import Counter
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from devices.models import CheckStatus, ConnectionCheck, Device, DeviceStatus, Product
from devices.tasks import reap_stale_unless_locked, request_fleet_checks

POLL_SECONDS = 0.1
REAP_EVERY_S = 1.0
LOAD_CHUNK = 500
FINISHED = [CheckStatus.SUCCEEDED, CheckStatus.FAILED]
SHOWN_FIELDS = ["status", "outcome", "reason", "runner", "started_at", "finished_at",
                "device__device_id", "device__product__product_id"]
SINCE_MARGIN = timedelta(seconds=30)
BAR_WIDTH = 30


class Command(BaseCommand):
    # Run by cron: Django's system checks (URLs, admin, templates) are for deployments and
    # `manage.py check`, and cost a tenth of a second of every run.
    requires_system_checks = []
    help = (
        "Queue a connection check for the devices of a product (--product P, repeatable) or of "
        "all products (--all), wait for the results and print a summary. Disabled devices are "
        "left out unless --include-disabled; online devices unless --force (a check "
        "disconnects them). Exit status 1 when a check failed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--product", action="append", default=[], metavar="P",
                            help="productId whose devices to check (repeatable).")
        parser.add_argument("--all", action="store_true", help="Check the devices of all products.")
        parser.add_argument("--include-disabled", action="store_true",
                            help="Also check disabled devices (they are refused by design).")
        parser.add_argument("--force", action="store_true",
                            help="Also check online devices; the broker disconnects them.")
        parser.add_argument("--timeout", type=float, default=600.0,
                            help="Give up waiting after this many seconds (default 600).")

    def handle(self, *args, product, all, include_disabled, force, timeout, **options):
        if not product and not all:
            raise CommandError("Say which devices: --product P (repeatable) or --all.")
        if product and all:
            raise CommandError("Give either --product or --all, not both.")
        devices = Device.objects.select_related("product").order_by(
            "product__product_id", "device_id"
        )
        if product:
            known = set(Product.objects.filter(product_id__in=product).values_list("product_id", flat=True))
            unknown = [p for p in product if p not in known]
            if unknown:
                raise CommandError(f"Unknown product(s): {', '.join(unknown)}.")
            devices = devices.filter(product__product_id__in=product)
        if not include_disabled:
            devices = devices.filter(enabled=True)
        skipped_online = []
        to_check = []
        for device in devices:
            if device.status == DeviceStatus.ONLINE and not force:
                skipped_online.append(device)
                continue
            to_check.append(device)
        checks = request_fleet_checks(to_check, force=force) if to_check else []
        if skipped_online:
            self.stdout.write(
                f"Skipped {len(skipped_online)} online device(s) (a check would disconnect them; "
                "use --force): " + ", ".join(str(d) for d in skipped_online)
            )
        if not checks:
            self.stdout.write("No devices to check.")
            return
        finished = self.wait(checks, timeout)
        self.summarise(checks, finished)

    def wait(self, checks, timeout):
        tty = self.stdout.isatty()
        pending = {check.pk for check in checks}
        finished = {}
        deadline = time.monotonic() + timeout
        if tty:
            self.draw(0, len(checks), Counter())
        # The checks' ids are one range (bulk-created): polled by range and by what finished since
        # the last poll (with a margin for the clocks of other hosts' workers), never by a list
        # of ids, which a fleet of 100,000 would make longer than a database accepts. A poll
        # reads ids only; the rows are loaded once, when their check is newly finished (the
        # margin would otherwise load every row finished in the last half minute at every poll).
        high = max(pending)
        since = None
        reaped_at = float("-inf")
        while pending and time.monotonic() < deadline:
            polled_at = timezone.now()
            if time.monotonic() - reaped_at >= REAP_EVERY_S:
                # Checks whose worker died fail as interrupted (reading every running check, of
                # which a fleet task has many claimed ahead: not at every poll).
                reaped_at = time.monotonic()
                if not reap_stale_unless_locked():  # the results are still read meanwhile
                    self.stderr.write("The database is locked; still waiting for the results.")
            done = ConnectionCheck.objects.filter(
                pk__range=(min(pending), high), status__in=FINISHED
            )
            if since is not None:
                done = done.filter(finished_at__gte=since - SINCE_MARGIN)
            since = polled_at
            new = sorted(pending.intersection(done.order_by().values_list("pk", flat=True)))
            for start in range(0, len(new), LOAD_CHUNK):
                for check in self.load(new[start:start + LOAD_CHUNK]):
                    pending.discard(check.pk)
                    finished[check.pk] = check
                    if not tty:
                        self.stdout.write(f"{check.device}: {check.status} — {check.message}")
            if tty:
                self.draw(len(finished), len(checks), Counter(c.status for c in finished.values()))
            if pending:
                time.sleep(POLL_SECONDS)
        if tty:
            self.stdout.write("")
        return finished

    @staticmethod
    def load(check_ids):
        """The finished checks ``check_ids`` with what the lines and the summary show (not the
        device's secret, which would be decrypted for every row)."""
        return (
            ConnectionCheck.objects.filter(pk__in=check_ids, status__in=FINISHED)
            .select_related("device__product")
            .only(*SHOWN_FIELDS)
            .order_by("pk")
        )

    def draw(self, done, total, counts):
        filled = BAR_WIDTH * done // total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stdout.write(
            f"\r[{bar}] {done}/{total}  succeeded {counts['succeeded']}  failed {counts['failed']}",
            ending="",
        )
        self.stdout.flush()

    def summarise(self, checks, finished):
        outcomes = Counter(check.outcome for check in finished.values())
        failed = [c for c in finished.values() if c.status == "failed"]
        unfinished = len(checks) - len(finished)
        self.stdout.write(
            f"Summary: {len(checks)} checked, {len(finished) - len(failed)} succeeded, "
            f"{len(failed)} failed" + (f", {unfinished} unfinished" if unfinished else "") + "."
        )
        for outcome, count in sorted(outcomes.items()):
            self.stdout.write(f"  {outcome}: {count}")
        for check in failed:
            self.stdout.write(f"  FAILED {check.device}: {check.message} {check.reason}".rstrip())
        if unfinished:
            self.stdout.write(
                "  Some checks did not finish in time: is the worker running "
                "(python manage.py db_worker)?"
            )
        if failed or unfinished:
            raise CommandError(
                f"{len(failed) + unfinished} of {len(checks)} checks did not succeed.", returncode=1
            )
