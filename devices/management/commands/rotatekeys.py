"""`python manage.py rotatekeys`: re-encrypt every device secret (and every previous secret, kept
since a rotation for the connection log's "you still sign with the old secret") under the newest key.

Run it after putting a new key first in PORTAL_SECRETS_KEY; the old keys can be removed once it
has finished. It works on the raw column (the field would decrypt on read and encrypt on write),
one transaction per chunk, so that a large registry is not locked for the whole run.
"""

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from devices.fields import PREFIX, reencrypt_secret
from devices.models import Device


def _reencrypt(row_pk, stored):
    if not stored.startswith(PREFIX):
        raise CommandError(f"Device {row_pk}: the stored secret is not encrypted by this portal.")
    try:
        return reencrypt_secret(stored)
    except InvalidToken:
        raise CommandError(
            f"Device {row_pk}: no key in PORTAL_SECRETS_KEY decrypts its secret (was a key removed "
            "before rotating?). The chunks before it are done; put the key back and run again."
        ) from None


class Command(BaseCommand):
    help = "Re-encrypt every device secret under the newest key of PORTAL_SECRETS_KEY."

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=500)

    def handle(self, *args, chunk_size, **options):
        done, skipped = self._rotate("device_secret", chunk_size, options["verbosity"])
        previous, _ = self._rotate("previous_secret", chunk_size, options["verbosity"])
        self.stdout.write(
            f"Re-encrypted {done} device secrets under the newest key"
            + (f" ({skipped} changed meanwhile, already current)" if skipped else "")
            + f", and {previous} previous secret(s) of rotated devices."
        )

    def _rotate(self, field, chunk_size, verbosity):
        qn = connection.ops.quote_name
        table = qn(Device._meta.db_table)
        pk = qn(Device._meta.pk.column)
        column = qn(Device._meta.get_field(field).column)
        select = f"SELECT {pk}, {column} FROM {table} WHERE {pk} > %s ORDER BY {pk} LIMIT %s"
        # Only where the value is still the one read: a secret rotated meanwhile was written by
        # the field, under the newest key already, and must not be overwritten with the old one.
        update = f"UPDATE {table} SET {column} = %s WHERE {pk} = %s AND {column} = %s"
        last_pk, done, skipped = 0, 0, 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(select, [last_pk, chunk_size])
                rows = cursor.fetchall()
                if not rows:
                    break
                changes = [
                    (_reencrypt(row_pk, stored), row_pk, stored)
                    for row_pk, stored in rows
                    if stored
                ]
                for change in changes:
                    cursor.execute(update, list(change))
                    if cursor.rowcount == 1:
                        done += 1
                    else:
                        skipped += 1
                last_pk = rows[-1][0]
            if verbosity >= 2:
                self.stdout.write(f"  … {field}: {done} so far")
        return done, skipped
