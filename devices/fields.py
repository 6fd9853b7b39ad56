"""An encrypted-at-rest text field for device secrets (Fernet, several keys for rotation)."""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

# Marks a stored value as ours, so that a plaintext value (never written by this field) is
# told apart from ciphertext rather than silently decrypted to garbage.
PREFIX = "fernet:"


@lru_cache(maxsize=8)
def _multifernet(keys):
    return MultiFernet([Fernet(key) for key in keys])


def secrets_cipher():
    """The MultiFernet for the configured keys, newest first (cached per key set)."""
    keys = tuple(settings.SECRETS_KEYS)
    if not keys:
        raise ImproperlyConfigured("PORTAL_SECRETS_KEY holds no key.")
    return _multifernet(keys)


def encrypt_secret(plaintext):
    return PREFIX + secrets_cipher().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt_secret(stored):
    if not stored.startswith(PREFIX):
        raise ImproperlyConfigured("A device secret in the database is not encrypted by this portal.")
    try:
        return secrets_cipher().decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise ImproperlyConfigured(
            "A device secret cannot be decrypted with any key in PORTAL_SECRETS_KEY. Was a key "
            "removed before `python manage.py rotatekeys` re-encrypted the secrets?"
        ) from None


def reencrypt_secret(stored):
    """The same secret encrypted under the newest key (MultiFernet.rotate)."""
    token = stored[len(PREFIX) :].encode("ascii")
    return PREFIX + secrets_cipher().rotate(token).decode("ascii")


class EncryptedSecretField(models.TextField):
    """Reads as plaintext in Python; the column only ever holds Fernet ciphertext."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt_secret(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt_secret(value)


class PreviousSecretField(EncryptedSecretField):
    """A device's secret before its last rotation, only to tell a device "you still sign with
    the old secret". Unreadable (its key removed from PORTAL_SECRETS_KEY) reads as "": losing it
    costs one hint, never a page."""

    def from_db_value(self, value, expression, connection):
        try:
            return super().from_db_value(value, expression, connection)
        except ImproperlyConfigured:
            return ""
