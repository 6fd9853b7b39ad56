"""The JSON API for scripts and factory tools (``/api/v1/...``).

Authentication: the console's session, or ``Authorization: Bearer <api token>``. Errors are
``{"error": {"code", "message", "field"}}`` with a 4xx status, checked in the order INTERFACES.md
gives: 401, 404, 403, 400.
"""

import json
from functools import wraps

from django.conf import settings
from django.db.models import Q
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from .choices import Permission
from .models import ApiToken, ConnectionCheck, Device
from .options import QUERY_NAMES, ConnectionOptions, OptionError

CHECK_HISTORY_LENGTH = 20


def error_response(status, code, message, field=None):
    return JsonResponse({"error": {"code": code, "message": message, "field": field}}, status=status)


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
            user = ApiToken.authenticate(token)
            if user is None:
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
            device = Device.objects.for_user(request.user).lookup(product_id, device_id)
        except Device.DoesNotExist:
            return error_response(
                404, "not_found", f"No device {device_id!r} in product {product_id!r}.", None
            )
        return view(request, device)

    return wrapper


@require_GET
@api_auth
@_with_device
def mqtt_params(request, device):
    if not request.user.has_perm(Permission.VIEW_SECRET):
        return error_response(
            403,
            "permission_denied",
            "Connection parameters include a password derived from the device secret; "
            f"this needs the permission {Permission.VIEW_SECRET}.",
        )
    unknown = sorted(set(request.GET) - set(QUERY_NAMES))
    if unknown:
        # A misspelt option (clientid, signMethod) would otherwise silently take its default.
        return error_response(
            400,
            "unknown_option",
            _("Unknown query parameter %(name)s; the options are %(names)s.")
            % {"name": repr(unknown[0]), "names": ", ".join(QUERY_NAMES)},
            unknown[0],
        )
    try:
        options = ConnectionOptions.from_query(request.GET)
        params = device.connection_params(options)
    except OptionError as error:
        return error_response(400, error.code, error.message, error.field)
    response = JsonResponse(params)
    response["Cache-Control"] = "no-store"
    return response


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
    allowed = (*QUERY_NAMES, "protocol", "force")
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
    csrf_failure = _csrf_failure(request)
    if csrf_failure is not None:
        return csrf_failure
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
        if not since.isdigit() or len(since) > 18:
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


def openapi_description(request):
    """OpenAPI 3 description of the JSON API."""
    error_schema = {"$ref": "#/components/schemas/Error"}

    def error(description):
        return {"description": description, "content": {"application/json": {"schema": error_schema}}}

    query = [
        ("securemode", {"type": "string", "enum": ["2", "3"]},
         "2 = TLS, 3 = plain TCP. Default: 2 when the deployment has a TLS port, else 3."),
        ("signmethod", {"type": "string", "enum": ["hmacmd5", "hmacsha1", "hmacsha256"]},
         "Default hmacsha256."),
        ("timestamp", {"type": "string", "pattern": "^([0-9]{1,16}|none|now)$"},
         "Milliseconds, or 'none' to leave it out. Default: the current time."),
        ("clientId", {"type": "string", "minLength": 1, "maxLength": 64},
         "Default: the deviceId. None of | , = & or whitespace."),
        ("exclusive", {"type": "string", "enum": ["true", "false"]}, "Default false."),
    ]
    description = {
        "openapi": "3.0.3",
        "info": {
            "title": "Device portal API",
            "version": "1",
            "description": "Connection parameters for devices of the platform's MQTT broker.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/v1/products/{productId}/devices/{deviceId}/mqtt-params": {
                "get": {
                    "operationId": "getMqttParams",
                    "summary": "Broker address and the three CONNECT fields of a device",
                    "parameters": [
                        {"name": "productId", "in": "path", "required": True,
                         "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}},
                        {"name": "deviceId", "in": "path", "required": True,
                         "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}},
                    ]
                    + [
                        {"name": name, "in": "query", "required": False, "schema": schema,
                         "description": text}
                        for name, schema, text in query
                    ],
                    "responses": {
                        "200": {
                            "description": "Connection parameters",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/MqttParams"}
                                }
                            },
                        },
                        "400": error("An option is not valid; 'field' names it."),
                        "401": error("Not logged in and no valid API token."),
                        "403": error("Lacks the permission devices.view_device_secret."),
                        "404": error("Unknown product or device."),
                    },
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "field"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string", "nullable": True},
                            },
                        }
                    },
                },
                "MqttParams": {
                    "type": "object",
                    "required": [
                        "productId", "deviceId", "clientId", "securemode", "signmethod",
                        "timestamp", "exclusive", "host", "port", "mqttClientId",
                        "mqttUsername", "mqttPassword",
                    ],
                    "properties": {
                        "productId": {"type": "string"},
                        "deviceId": {"type": "string"},
                        "clientId": {"type": "string"},
                        "securemode": {"type": "integer", "enum": [2, 3]},
                        "signmethod": {"type": "string"},
                        "timestamp": {"type": "integer", "nullable": True},
                        "exclusive": {"type": "boolean"},
                        "host": {"type": "string"},
                        "port": {"type": "integer"},
                        "mqttClientId": {"type": "string"},
                        "mqttUsername": {"type": "string"},
                        "mqttPassword": {"type": "string"},
                    },
                },
            },
        },
    }
    _describe_checks(description, error)
    _describe_connections(description, error)
    return JsonResponse(description)


def _describe_connections(description, error):
    """The connection log endpoint in the OpenAPI description."""
    path_id = {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}
    text = {"type": "string"}
    event = {"type": "object", "properties": {
        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
        "kind": {"type": "string", "enum": ["connected", "refused", "disconnected"]},
        "broker": {"type": "string", "enum": ["embedded", "emqx"]},
        "clientId": text, "peer": text, "transport": {"type": ["string", "null"]},
        "protocol": {"type": ["string", "null"]}, "connack": {"type": ["integer", "null"]},
        "code": text, "reason": text, "hint": {"type": ["string", "null"]},
        "count": {"type": "integer"}, "sessionSeconds": {"type": ["integer", "null"]},
    }}
    description["paths"]["/api/v1/products/{productId}/devices/{deviceId}/connections"] = {
        "get": {
            "operationId": "listConnections",
            "summary": "The device's connection log, newest first (never a password or secret)",
            "parameters": [
                {"name": "productId", "in": "path", "required": True, "schema": path_id},
                {"name": "deviceId", "in": "path", "required": True, "schema": path_id},
                {"name": "since", "in": "query", "required": False, "schema": {"type": "integer"},
                 "description": "An event id: only newer events."},
                {"name": "changedAfter", "in": "query", "required": False,
                 "schema": {"type": "string", "format": "date-time"},
                 "description": "With since: also the older events whose count grew after "
                                "this time."},
            ],
            "responses": {
                "200": {"description": "Events", "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"events": {"type": "array", "items": event}}}}}},
                "400": error("since is not an event id."),
                "401": error("Not logged in and no valid API token."),
                "404": error("Unknown product or device, or no devices.view_device."),
            },
        }
    }


def _describe_checks(description, error):
    """The connection-check endpoints in the OpenAPI description."""
    path_id = {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}
    check = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Check"}}}}
    description["paths"]["/api/v1/products/{productId}/devices/{deviceId}/checks"] = {
        "parameters": [
            {"name": "productId", "in": "path", "required": True, "schema": path_id},
            {"name": "deviceId", "in": "path", "required": True, "schema": path_id},
        ],
        "post": {
            "operationId": "startCheck",
            "summary": "Queue a connection check of the device (connects as the device)",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "securemode": {"type": "integer", "enum": [2, 3]},
                    "signmethod": {"type": "string",
                                   "enum": ["hmacmd5", "hmacsha1", "hmacsha256"]},
                    "timestamp": {"type": "string", "description": "ms, 'now' or 'none'"},
                    "clientId": {"type": "string", "minLength": 1, "maxLength": 64},
                    "exclusive": {"type": "boolean"},
                    "protocol": {"type": "string", "enum": ["3.1.1", "5.0", "3.1"]},
                    "force": {"type": "boolean",
                              "description": "Required (true) when the device is online."},
                },
            }}}},
            "responses": {
                "202": {"description": "Queued", **check},
                "400": error("An option is not valid; 'field' names it."),
                "401": error("Not logged in and no valid API token."),
                "403": error("Lacks the permission devices.add_connectioncheck (or CSRF)."),
                "404": error("Unknown product or device."),
                "409": error("The device is online and force is not true."),
            },
        },
        "get": {
            "operationId": "listChecks",
            "summary": "The device's latest connection checks, newest first",
            "responses": {
                "200": {"description": "Checks", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"checks": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Check"}}}}}}},
                "401": error("Not logged in and no valid API token."),
                "404": error("Unknown product or device."),
            },
        },
    }
    description["paths"]["/api/v1/checks/{id}"] = {
        "get": {
            "operationId": "getCheck",
            "summary": "One connection check: poll it until status is succeeded or failed",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "integer"}}],
            "responses": {
                "200": {"description": "The check", **check},
                "401": error("Not logged in and no valid API token."),
                "404": error("Unknown check."),
            },
        }
    }
    nullable_string = {"type": "string", "nullable": True}
    description["components"]["schemas"]["Check"] = {
        "type": "object",
        "required": ["id", "status", "reason", "latencyMs"],
        "properties": {
            "id": {"type": "integer"},
            "productId": {"type": "string"},
            "deviceId": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
            "outcome": nullable_string,
            "reason": nullable_string,
            "hint": nullable_string,
            "detail": nullable_string,
            "connackCode": {"type": "integer", "nullable": True},
            "latencyMs": {"type": "number", "nullable": True},
            "latencies": {"type": "object", "additionalProperties": {"type": "number"}},
            "options": {"type": "object"},
            "requestedBy": nullable_string,
            "queuedAt": {"type": "string", "format": "date-time"},
            "startedAt": {"type": "string", "format": "date-time", "nullable": True},
            "finishedAt": {"type": "string", "format": "date-time", "nullable": True},
        },
    }
