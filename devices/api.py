"""The JSON API for scripts and factory tools (``/api/v1/...``).

Authentication: the console's session, or ``Authorization: Bearer <api token>``. Errors are
``{"error": {"code", "message", "field"}}`` with a 4xx status, checked in the order INTERFACES.md
gives: 401, 404, 403, 400.
"""

import json
from functools import wraps
from pathlib import Path

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from . import hot_queries, throttle, token_cache
from .choices import Permission
from .kit import build_kit
from .models import ConnectionCheck, Device, may_see_devices
from .options import QUERY_NAMES, ConnectionOptions, OptionError

CHECK_HISTORY_LENGTH = 20
# The fields of the body of POST .../checks (all optional).
CHECK_BODY_FIELDS = (*QUERY_NAMES, "protocol", "force")
MESSAGE_BODY_FIELDS = ("topic", "payload", "qos")
TRACE_BODY_FIELDS = ("minutes",)
OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")


def error_response(status, code, message, field=None):
    return JsonResponse({"error": {"code": code, "message": message, "field": field}}, status=status)


def _allow_only(*methods):
    """Like ``require_http_methods``, but the 405 is in the API's JSON error format."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = error_response(
                    405, "method_not_allowed",
                    f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                )
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def bearer_token(request):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def api_auth(view):
    """Session or bearer token; 401 JSON (never a redirect to the login page) otherwise."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        token = bearer_token(request)
        if token is not None:
            retry_after = throttle.token_retry_after(request)
            if retry_after is not None:
                response = error_response(
                    429,
                    "too_many_failures",
                    _("Too many failed API tokens from this address. Try again in %(seconds)d "
                      "seconds.") % {"seconds": retry_after},
                )
                response["Retry-After"] = str(retry_after)
                return response
            user = token_cache.authenticate(token)  # ≤ 1 s old: devices/token_cache.py
            if user is None:
                throttle.record_token_failure(request)
                return error_response(
                    401, "invalid_token", "The API token is unknown or its user is inactive."
                )
            request.user = user
        elif not request.user.is_authenticated:
            return error_response(
                401,
                "not_authenticated",
                "Log in, or send 'Authorization: Bearer <api token>' "
                "(python manage.py createapitoken USERNAME makes one).",
            )
        return view(request, *args, **kwargs)

    # Token requests carry no cookie, so CSRF does not apply; session requests here are GETs.
    return csrf_exempt(wrapper)


def _with_device(view):
    """Calls ``view(request, device)`` with the device the URL names, or answers 404 when it is
    unknown or the user may not see it (the two look the same). Goes below ``api_auth``, so that
    the 404 comes after the 401 and before any 403."""

    @wraps(view)
    def wrapper(request, product_id, device_id):
        try:
            if not may_see_devices(request.user):
                raise Device.DoesNotExist
            # Device.objects.lookup(…) in one query without the ORM's compile step
            device = hot_queries.device_with_product(product_id, device_id)
        except Device.DoesNotExist:
            return error_response(
                404, "not_found", f"No device {device_id!r} in product {product_id!r}.", None
            )
        return view(request, device)

    return wrapper


def _refuse_params_request(request):
    """The 403 and the query 400s shared by mqtt-params and the kit, or None."""
    if not request.user.has_perm(Permission.VIEW_SECRET):
        return error_response(
            403,
            "permission_denied",
            "Connection parameters include a password derived from the device secret; "
            f"this needs the permission {Permission.VIEW_SECRET}.",
        )
    return _query_problem(request.GET)


@require_GET
@api_auth
@_with_device
def mqtt_params(request, device):
    refusal = _refuse_params_request(request)
    if refusal is not None:
        return refusal
    try:
        options = ConnectionOptions.from_query(request.GET)
        params = device.connection_params(options)
    except OptionError as error:
        return error_response(400, error.code, error.message, error.field)
    response = JsonResponse(params)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@api_auth
@_with_device
def device_kit(request, device):
    """The connection kit (a zip, devices/kit.py): same permission and options as mqtt-params;
    audited, since it holds the device secret."""
    refusal = _refuse_params_request(request)
    if refusal is not None:
        return refusal
    try:
        kit = build_kit(device, ConnectionOptions.from_query(request.GET), actor=request.user)
    except OptionError as error:
        return error_response(400, error.code, error.message, error.field)
    response = HttpResponse(kit.content, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{kit.filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _query_problem(query):
    """A 400 for a query with an unknown or a repeated option, else None."""
    unknown = sorted(set(query) - set(QUERY_NAMES))
    if unknown:
        # A misspelt option (clientid, signMethod) would otherwise silently take its default.
        return error_response(
            400,
            "unknown_option",
            _("Unknown query parameter %(name)s; the options are %(names)s.")
            % {"name": repr(unknown[0]), "names": ", ".join(QUERY_NAMES)},
            unknown[0],
        )
    repeated = next((name for name in QUERY_NAMES if len(query.getlist(name)) > 1), None)
    if repeated is not None:
        # securemode=3&securemode=2 would otherwise quietly mean whichever came last.
        return error_response(
            400,
            "repeated_option",
            _("%(name)s is given more than once; give each option at most once.")
            % {"name": repeated},
            repeated,
        )
    return None


def _body_too_large(request):
    """A 413 in the JSON error format when the body is over the size limit, else None.

    Read before anything else touches the body (the CSRF check reads form bodies), so that an
    oversized body never reaches Django's HTML 400 page."""
    try:
        request.body  # noqa: B018 (reading it is the check)
    except RequestDataTooBig:
        return error_response(
            413,
            "body_too_large",
            _("The body must be at most %(max)d bytes.")
            % {"max": settings.DATA_UPLOAD_MAX_MEMORY_SIZE},
        )
    return None


def _csrf_failure(request):
    """Session-authenticated writes need the CSRF token (token requests carry no cookie)."""
    if bearer_token(request) is not None:
        return None
    rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
    if rejected is None:
        return None
    return error_response(
        403, "csrf_failed", "Send the CSRF token in the X-CSRFToken header (session requests)."
    )




def _parse_check_body(request):
    """(ConnectionOptions, protocol, force) from an optional JSON object; raises OptionError."""
    from .connection_check import DEFAULT_PROTOCOL

    if not request.body.strip():
        body = {}
    else:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
            body = None
    if not isinstance(body, dict):
        raise OptionError(None, _("The body must be a JSON object (or empty)."))
    allowed = CHECK_BODY_FIELDS
    for key in body:
        if key not in allowed:
            raise OptionError(
                key,
                _("Unknown field %(name)s; the fields are %(names)s.")
                % {"name": repr(key), "names": ", ".join(allowed)},
            )
    query = {}
    for key in QUERY_NAMES:
        value = body.get(key)
        if value is None:
            if key == "timestamp" and "timestamp" in body:
                query[key] = "none"
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int):
            value = str(value)
        elif not isinstance(value, str):
            raise OptionError(
                key, _("%(name)s must be a string, a number or a boolean.") % {"name": key}
            )
        query[key] = value
    options = ConnectionOptions.from_query(query)
    protocol = body.get("protocol", DEFAULT_PROTOCOL)  # checked by request_check
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise OptionError("force", _("force must be true or false."))
    return options, protocol, force


@require_http_methods(["GET", "POST"])
@api_auth
@_with_device
def device_checks(request, device):
    """GET: the device's latest checks. POST: queue a connection check (202)."""
    from .tasks import DeviceOnlineError, request_check

    if request.method == "GET":
        checks = device.checks.select_related("device__product", "requested_by")
        return JsonResponse({"checks": [c.to_dict() for c in checks[:CHECK_HISTORY_LENGTH]]})
    refusal = _body_too_large(request) or _csrf_failure(request)
    if refusal is not None:
        return refusal
    if not request.user.has_perm(Permission.RUN_CHECK):
        return error_response(
            403,
            "permission_denied",
            "A check connects to the broker as the device; this needs the permission "
            f"{Permission.RUN_CHECK}.",
        )
    try:
        options, protocol, force = _parse_check_body(request)
        check = request_check(
            device, options=options, protocol=protocol, requested_by=request.user, force=force
        )
    except OptionError as error:
        return error_response(400, error.code, error.message, error.field)
    except DeviceOnlineError as error:
        return error_response(409, error.code, str(error), "force")
    # The row as queued: a fast worker may already have claimed it, but the answer to the
    # request is what was queued (INTERFACES.md: "status": "queued").
    return JsonResponse(check.to_dict(), status=202)


CONNECTION_LOG_LENGTH = 100


@require_GET
@api_auth
@_with_device
def device_connections(request, device):
    """The device's connection log, newest first. ``since`` = an event id answers only newer
    events; ``changedAfter`` (ISO 8601, optional) adds the older ones whose count grew after that
    time (a folded repeat), which is how the device page keeps its counts current."""
    from django.utils.dateparse import parse_datetime

    from .models import ConnectionEvent

    events = ConnectionEvent.objects.filter(device=device)
    since = request.GET.get("since", "")
    changed_after = request.GET.get("changedAfter", "")
    if since:
        if not (since.isascii() and since.isdigit()) or len(since) > 18:
            return error_response(
                400, "invalid_since", _("since must be the id of an event (digits only)."), "since"
            )
        newer = Q(pk__gt=int(since))
        if changed_after:
            try:
                when = parse_datetime(changed_after)
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                return error_response(
                    400, "invalid_changed_after",
                    _("changedAfter must be a date and time with its offset (ISO 8601), as the "
                      "events' at."),
                    "changedAfter",
                )
            newer |= Q(last_at__gt=when)
        events = events.filter(newer)
    response = JsonResponse(
        {"events": [event.to_dict() for event in events[:CONNECTION_LOG_LENGTH]]}
    )
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@api_auth
def check_detail(request, check_id):
    check = (
        ConnectionCheck.objects.select_related("device__product", "requested_by")
        .filter(pk=check_id, device__in=Device.objects.for_user(request.user))
        .first()
    )
    if check is None:
        return error_response(404, "not_found", f"No connection check {check_id}.")
    response = JsonResponse(check.to_dict())
    response["Cache-Control"] = "no-store"
    return response


@_allow_only("GET")
def openapi_description(request):
    """The OpenAPI 3 description of the JSON API: ``devices/openapi.json``, served as it is.

    A document, not code: tests/test_openapi.py keeps its enums and patterns equal to the
    constants the code decides with, so neither can drift from the other."""
    return HttpResponse(OPENAPI_DOCUMENT.read_bytes(), content_type="application/json")


def _json_object(request):
    """The body as a JSON object ({} when empty); raises MessageError naming no field."""
    from .message_trace import MessageError

    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise MessageError(400, "invalid_body", _("The body must be a JSON object."))
    return body


def _trace_permission_refusal(request):
    if request.user.has_perm(Permission.TRACE):
        return None
    return error_response(
        403, "permission_denied",
        _("Tracing and sending messages needs the permission “Can trace and send device "
          "messages” (%(name)s); ask an administrator of the portal.") % {"name": Permission.TRACE},
    )


@_allow_only("POST")
@api_auth
@_with_device
def device_messages(request, device):
    """Send one message to the device: 200 with what became of it (INTERFACES.md)."""
    from .message_trace import MessageError, send_to_device

    refusal = _body_too_large(request) or _csrf_failure(request) or _trace_permission_refusal(request)
    if refusal is not None:
        return refusal
    try:
        body = _json_object(request)
        for key in body:
            if key not in MESSAGE_BODY_FIELDS:
                raise MessageError(400, "unknown_field",
                                   _("Unknown field %(name)s; the fields are topic, payload, qos.")
                                   % {"name": repr(key)}, key)
        answer = send_to_device(device, body.get("topic"), body.get("payload", ""),
                                body.get("qos", 0), request.user)
    except MessageError as error:
        return error_response(error.status, error.code, error.message, error.field)
    return JsonResponse(answer)


@_allow_only("POST")
@api_auth
@_with_device
def device_traces(request, device):
    """Start a trace of the device (optional ``{"minutes"}``, 1–60, default 10): 201."""
    from .message_trace import MessageError, start_trace, trace_to_dict

    refusal = _body_too_large(request) or _csrf_failure(request) or _trace_permission_refusal(request)
    if refusal is not None:
        return refusal
    try:
        body = _json_object(request)
        for key in body:
            if key not in TRACE_BODY_FIELDS:
                raise MessageError(400, "unknown_field",
                                   _("Unknown field %(name)s; the only field is minutes.")
                                   % {"name": repr(key)}, key)
        trace = start_trace(device, request.user, body.get("minutes"))
    except MessageError as error:
        return error_response(error.status, error.code, error.message, error.field)
    return JsonResponse(trace_to_dict(trace), status=201)


def _trace_for(request, trace_id):
    from .models import Trace

    return (Trace.objects.select_related("device__product")
            .filter(pk=trace_id, device__in=Device.objects.for_user(request.user)).first())


@require_GET
@api_auth
def trace_detail(request, trace_id):
    """A trace and its messages; ``after`` = a message id answers only newer ones."""
    from .message_trace import trace_to_dict

    trace = _trace_for(request, trace_id)
    if trace is None:
        return error_response(404, "not_found", f"No trace {trace_id}.")
    refusal = _trace_permission_refusal(request)
    if refusal is not None:
        return refusal
    after = request.GET.get("after", "")
    if after and (not (after.isascii() and after.isdigit()) or len(after) > 18):
        return error_response(400, "invalid_after",
                              _("after must be the id of a message (digits only)."), "after")
    response = JsonResponse(trace_to_dict(trace, int(after) if after else None))
    response["Cache-Control"] = "no-store"
    return response


@_allow_only("POST")
@api_auth
def trace_stop(request, trace_id):
    """Stop a trace now (200 with the trace)."""
    from .message_trace import stop_trace, trace_to_dict

    trace = _trace_for(request, trace_id)
    if trace is None:
        return error_response(404, "not_found", f"No trace {trace_id}.")
    refusal = _csrf_failure(request) or _trace_permission_refusal(request)
    if refusal is not None:
        return refusal
    stop_trace(trace)
    return JsonResponse(trace_to_dict(trace))
