"""A database locked for longer than its lock timeout answers 503 with Retry-After, not 500.

With SQLite every write waits for the one write lock (20 s, see settings); a longer lock (a
migration, a bulk import, a stuck process) makes the write raise ``OperationalError: database is
locked``. That is the server being busy, not broken: JSON paths (``/api/``, ``/mqtt/``) get the
API's error format, pages a page that says to try again. Nothing else is caught here.
"""

import logging

from django.db.utils import OperationalError
from django.shortcuts import render
from django.utils.translation import gettext as _

from devices.api import error_response

logger = logging.getLogger("portal.busy")

RETRY_AFTER_S = 5
JSON_PREFIXES = ("/api/", "/mqtt/")


def is_database_locked(error: BaseException) -> bool:
    return isinstance(error, OperationalError) and "is locked" in str(error).lower()


class DatabaseLockedMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_database_locked(exception):
            return None
        # %r: the path is the client's, so its control characters are escaped in the log.
        logger.warning("Database locked: %s %r answered 503", request.method, request.path)
        if request.path.startswith(JSON_PREFIXES):
            response = error_response(
                503, "database_busy",
                _("The database is busy, so this could not be done. Try again in a few seconds."),
            )
        else:
            response = render(request, "503.html", status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
