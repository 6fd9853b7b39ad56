"""Lock-out after repeated failed logins and failed API tokens, on top of django-axes.

django-axes records each failure in its ``AccessAttempt`` table (the database, so every gunicorn
worker sees the same counts). A login form's failure counts against its address and against the
account it named; a failed API token names no account, so it counts against its address only. An
address or account with ``AXES_FAILURE_LIMIT`` failures, none older than the cool-off period, is
refused (even with the right password or a valid token) until the cool-off has passed since its
latest failure. Tries during a lock-out are not counted, so the retry time we give holds.
"""

import ipaddress
import math

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import (
    get_client_ip_address,
    get_client_username,
    get_cool_off,
    get_credentials,
    get_failure_limit,
)
from axes.models import AccessBase
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import RequestDataTooBig
from django.db.models import Max, Sum
from django.http import QueryDict
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.utils import timezone

from . import hot_queries


def _token_credentials():
    """The credentials of a failed API token: no account, so only the address is judged."""
    return get_credentials(None)


def lockout_parameters(request_or_attempt, credentials=None):
    """Axes' AXES_LOCKOUT_PARAMETERS: by address, and by account when one was named."""
    if isinstance(request_or_attempt, AccessBase):
        username = request_or_attempt.username
    elif getattr(request_or_attempt, "portal_token_failure", False):
        username = None  # a failed API token names no account; its body is not a login form
    else:
        try:
            username = get_client_username(request_or_attempt, credentials)
        except (MultiPartParserError, RequestDataTooBig, UnicodeDecodeError):
            username = None  # a body that is no form names no account
    return ["ip_address", "username"] if username else ["ip_address"]


def client_address(request):
    """The client's address: REMOTE_ADDR, or behind PORTAL_TRUSTED_PROXY_COUNT proxies the entry
    of X-Forwarded-For that the outermost trusted proxy wrote (entries further left are the
    client's own words and could name anyone)."""
    remote = request.META.get("REMOTE_ADDR") or None
    count = settings.TRUSTED_PROXY_COUNT
    if not count:
        return remote
    entries = [e.strip() for e in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    entries = [e for e in entries if e]
    if len(entries) < count:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-count]))
    except ValueError:
        return remote


def locked_until(request, credentials=None):
    """When the lock-out on this request's address (or the account in ``credentials``) ends, or
    None when it is not locked out."""
    handler = AxesProxyHandler.get_implementation()
    AxesProxyHandler.update_request(request)
    limit = get_failure_limit(request, credentials)
    cool_off = get_cool_off(request)
    ends = []
    for attempts in handler.get_user_attempts(request, credentials):
        totals = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        if (totals["failures"] or 0) >= limit:
            ends.append(totals["last"] + cool_off)
    return max(ends) if ends else None


def seconds_until(moment):
    return max(1, math.ceil((moment - timezone.now()).total_seconds()))


class LockoutBackend(AxesStandaloneBackend):
    """Axes' check before the real backend: refuses a locked-out address or account.

    Without a request (the test client's ``login()``, a shell) there is no address to judge, so
    it stands aside; Django's login view and the admin's always pass the request.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_response(request, original_response=None, credentials=None):
    """Axes' AXES_LOCKOUT_CALLABLE: the page that says the login is locked and until when."""
    until = locked_until(request, credentials) or timezone.now() + get_cool_off(request)
    seconds = seconds_until(until)
    response = render(
        request,
        "registration/locked_out.html",
        {"until": until, "minutes": math.ceil(seconds / 60)},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


def token_retry_after(request):
    """Seconds until this request's address may use API tokens again, or None when it may now.

    Asked on every token request, uncached (a lock-out acts at once). An address with no failure
    inside the cool-off window cannot be locked out, and that is one indexed query
    (``hot_queries.has_failures_since``); only an address with failures is counted in full."""
    credentials = _token_credentials()
    cool_off = get_cool_off(request)
    if cool_off is not None and get_failure_limit(request, credentials) >= 1:
        since = timezone.now() - cool_off
        if not hot_queries.has_failures_since(get_client_ip_address(request), since):
            return None
    until = locked_until(request, credentials)
    return None if until is None else seconds_until(until)


def record_token_failure(request):
    """Counts an unknown API token against the request's address (never the token itself)."""
    request.portal_token_failure = True
    try:
        _ = request.POST  # axes copies the form fields (masked) into its record of the failure
    except (MultiPartParserError, RequestDataTooBig, UnicodeDecodeError):
        request.POST = QueryDict()  # a body that is no form: there is nothing to copy
    user_login_failed.send(sender=__name__, credentials=_token_credentials(), request=request)
    # Axes flags the request that reached the limit for its middleware to swap in the lock-out
    # page; the API answers this one as the 401 it is, and the next ones with its own 429.
    request.axes_locked_out = False
