"""Registering many devices at once, and exporting their credentials for the factory.

The admin views only parse a form, call these functions and render; everything that decides
what a batch is lives here, so that it can be tested without HTTP. A batch is validated as a
whole before anything is written: one bad row and nothing is created.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import signing, xlsx
from .choices import BatchSource
from .models import AuditEvent, Device, RegistrationBatch, generate_device_secret

MAX_BATCH_SIZE = 10_000
MAX_NAME_LENGTH = Device._meta.get_field("name").max_length
MAX_WIDTH = signing.ID_MAX_LENGTH
# A CSV of 10,000 rows of a 64-character deviceId and a 200-character name stays well below this.
MAX_CSV_BYTES = 5 * 1024 * 1024
# How many problems a refusal lists (the rest are counted), so the message stays readable.
MAX_LISTED_PROBLEMS = 10
# bulk_create's chunk size: few round trips, and below every backend's parameter limit.
BULK_BATCH_SIZE = 500
# The chunk size of "which of these deviceIds exist already?" (one IN (...) query per chunk).
LOOKUP_CHUNK = 900


CSV_HEADER_NAMES = {"deviceid", "device_id", "device id"}


@dataclass(frozen=True)
class BatchRow:
    """One device of a batch; ``row`` is the number a person can find it by (CSV line or index)."""

    row: int
    device_id: str
    name: str = ""


class BatchError(ValueError):
    """The batch cannot be registered. ``problems`` are (row or None, reason) pairs."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(self.message)

    @property
    def message(self):
        return " ".join(self.lines())

    def lines(self):
        """One readable line per problem (the first ten), then how many more there are."""
        parts = []
        for row, reason in self.problems[:MAX_LISTED_PROBLEMS]:
            parts.append(
                _("Row %(row)d: %(reason)s") % {"row": row, "reason": reason} if row else reason
            )
        hidden = len(self.problems) - MAX_LISTED_PROBLEMS
        if hidden > 0:
            parts.append(
                ngettext("… and %(count)d more problem.", "… and %(count)d more problems.", hidden)
                % {"count": hidden}
            )
        return parts


# -- building the rows -----------------------------------------------------------------------------


def generated_rows(prefix, count, start=1, width=0, name_prefix=""):
    """Rows ``prefix`` + running number (zero-padded to ``width``), e.g. ``sensor-0001``.

    The running number starts at ``start``; ``name_prefix``, when given, names each device the
    same way. Row numbers count from 1 (the first generated device)."""
    problems = []
    if not isinstance(count, int) or not 1 <= count <= MAX_BATCH_SIZE:
        problems.append(
            (None, _("The number of devices must be from 1 to %(max)d.") % {"max": MAX_BATCH_SIZE})
        )
    if not isinstance(start, int) or start < 0:
        problems.append((None, _("The first number must be 0 or more.")))
    if not isinstance(width, int) or not 0 <= width <= MAX_WIDTH:
        problems.append((None, _("The width must be from 0 to %(max)d.") % {"max": MAX_WIDTH}))
    if prefix and signing.id_error(prefix + "0"):
        problems.append(
            (
                None,
                _(
                    "The prefix %(prefix)r cannot start a deviceId: a deviceId is 1 to 64 "
                    "characters of letters, digits and - _ . : @."
                )
                % {"prefix": prefix[:80]},
            )
        )
    if problems:
        raise BatchError(problems)
    rows = []
    for index in range(count):
        number = str(start + index).zfill(width)
        name = f"{name_prefix}{number}" if name_prefix else ""
        rows.append(BatchRow(index + 1, f"{prefix}{number}", name))
    return rows


def rows_from_csv(data: bytes):
    """Rows of an uploaded CSV: ``deviceId[,name]`` per line, header optional, UTF-8 (BOM or not).

    Row numbers are the file's line numbers, so that a person can find a bad row in a spreadsheet.
    Blank lines are skipped; values are stripped of surrounding spaces."""
    if len(data) > MAX_CSV_BYTES:
        raise BatchError(
            [(None, _("The file is larger than %(mb)d MB.") % {"mb": MAX_CSV_BYTES // 2**20})]
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise BatchError(
            [(line, _("The file is not UTF-8 text (save the CSV as UTF-8)."))]
        ) from None
    rows, problems = [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for cells in reader:
            line = reader.line_num
            cells = [cell.strip() for cell in cells]
            while cells and cells[-1] == "":
                cells.pop()
            if not cells:
                continue
            if not rows and not problems and cells[0].lower() in CSV_HEADER_NAMES:
                continue  # the optional header
            if len(cells) > 2:
                problems.append(
                    (
                        line,
                        _("expected deviceId and an optional name, found %(n)d columns.")
                        % {"n": len(cells)},
                    )
                )
                continue
            rows.append(BatchRow(line, cells[0], cells[1] if len(cells) > 1 else ""))
    except csv.Error as error:
        problems.append(
            (reader.line_num, _("not a valid CSV line (%(error)s).") % {"error": error})
        )
    if problems:
        raise BatchError(problems)
    if not rows:
        raise BatchError([(None, _("The file holds no deviceId."))])
    return rows


# -- validating and writing ------------------------------------------------------------------------


def validate_rows(product, rows):
    """Every problem of the batch as (row, reason), in row order; empty when it can be written.

    Checks the identifier rules (the one in ``signing``), names, the size limit, duplicates inside
    the batch, and deviceIds the product already has (a few queries, not one per row)."""
    problems = []
    if not rows:
        return [(None, _("The batch holds no device."))]
    if len(rows) > MAX_BATCH_SIZE:
        problems.append(
            (
                None,
                _("A batch holds at most %(max)d devices; this one has %(count)d.")
                % {"max": MAX_BATCH_SIZE, "count": len(rows)},
            )
        )
    first_row_of = {}
    for row in rows:
        if signing.id_error(row.device_id):
            # signing decides; its English reason is said again here in the reader's language.
            problems.append(
                (
                    row.row,
                    _(
                        "deviceId %(id)r is not allowed: use 1 to 64 characters of letters, "
                        "digits and - _ . : @."
                    )
                    % {"id": row.device_id[:80]},
                )
            )
            continue
        if len(row.name) > MAX_NAME_LENGTH:
            problems.append(
                (
                    row.row,
                    _("the name is longer than %(max)d characters.") % {"max": MAX_NAME_LENGTH},
                )
            )
        if row.device_id in first_row_of:
            problems.append(
                (
                    row.row,
                    _("deviceId %(id)r is already in row %(first)d of this batch.")
                    % {"id": row.device_id, "first": first_row_of[row.device_id]},
                )
            )
            continue
        first_row_of[row.device_id] = row.row
    existing = existing_device_ids(product, list(first_row_of))
    for device_id in existing:
        problems.append(
            (
                first_row_of[device_id],
                _("product %(product)s already has a device %(id)r.")
                % {"product": product.product_id, "id": device_id},
            )
        )
    problems.sort(key=lambda problem: problem[0] or 0)
    return problems


def existing_device_ids(product, device_ids):
    """Which of ``device_ids`` the product already has (one query per chunk of 900)."""
    found = set()
    for start in range(0, len(device_ids), LOOKUP_CHUNK):
        chunk = device_ids[start : start + LOOKUP_CHUNK]
        found.update(
            Device.objects.filter(product=product, device_id__in=chunk).values_list(
                "device_id", flat=True
            )
        )
    return found


def register_batch(product, rows, user=None, source=BatchSource.GENERATED):
    """Validate the whole batch, then create its devices in one transaction.

    Raises BatchError (and writes nothing) when any row is bad. Secrets are generated here;
    bulk_create still encrypts them (the field's get_prep_value), but skips Device.save, which is
    why every row is validated first."""
    problems = validate_rows(product, rows)
    if problems:
        raise BatchError(problems)
    now = timezone.now()
    try:
        with transaction.atomic():
            batch = RegistrationBatch.objects.create(
                product=product,
                created_by=user if user is not None and user.is_authenticated else None,
                source=source,
                device_count=len(rows),
            )
            Device.objects.bulk_create(
                (
                    Device(
                        product=product,
                        device_id=row.device_id,
                        name=row.name,
                        device_secret=generate_device_secret(),
                        batch=batch,
                        created_at=now,
                        updated_at=now,
                    )
                    for row in rows
                ),
                batch_size=BULK_BATCH_SIZE,
            )
    except IntegrityError:
        # Someone registered one of these deviceIds between the check and the write.
        problems = validate_rows(product, rows) or [
            (None, _("The batch conflicts with devices registered meanwhile; try again."))
        ]
        raise BatchError(problems) from None
    return batch


# -- credentials for the factory -------------------------------------------------------------------


CREDENTIALS_HEADER = ["productId", "deviceId", "deviceSecret"]


def credentials_csv(devices) -> str:
    """``productId,deviceId,deviceSecret`` lines for ``devices`` (which should select product)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CREDENTIALS_HEADER)
    for device in devices:
        writer.writerow([device.product.product_id, device.device_id, device.device_secret])
    return out.getvalue()


def credentials_xlsx(devices) -> bytes:
    """The same rows as :func:`credentials_csv`, as a workbook whose every cell is text.

    The CSV is for machines (exact bytes); this is for people: a spreadsheet opening the CSV
    turns ``-2-3-144272509`` or ``@SUM`` into a formula and ``0012`` into 12, never this."""
    rows = [CREDENTIALS_HEADER]
    rows.extend(
        [device.product.product_id, device.device_id, device.device_secret] for device in devices
    )
    return xlsx.text_workbook(rows, sheet_name="credentials", widths=(24, 36, 40))


def export_credentials(devices, user, detail=""):
    """The credentials CSV of ``devices``, recorded as an export by ``user`` (who, when, which)."""
    devices = list(devices)
    content = credentials_csv(devices)
    AuditEvent.record(AuditEvent.Action.EXPORT_CREDENTIALS, user, devices, detail=detail)
    return content


def export_credentials_xlsx(devices, user, detail=""):
    """The credentials workbook of ``devices``, recorded like the CSV (the detail says xlsx)."""
    devices = list(devices)
    content = credentials_xlsx(devices)
    detail = f"{detail} (xlsx)" if detail else "xlsx"
    AuditEvent.record(AuditEvent.Action.EXPORT_CREDENTIALS, user, devices, detail=detail)
    return content


def batch_devices(batch):
    return batch.devices.select_related("product").order_by("pk")
