"""The JSON API for scripts and factory tools (``/api/v1/...``).

Authentication: the console's session, or ``Authorization: Bearer <api token>``. Errors are
``{"error": {"code", "message", "field"}}`` with a 4xx status, checked in the order INTERFACES.md
gives: 401, 404, 403, 400.
"""

from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from .models import ApiToken, Device
from .options import ConnectionOptions, OptionError

SECRET_PERMISSION = "devices.view_device_secret"


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


def _get_device(request, product_id, device_id):
    try:
        return Device.objects.for_user(request.user).lookup(product_id, device_id)
    except Device.DoesNotExist:
        return None


@require_GET
@api_auth
def mqtt_params(request, product_id, device_id):
    device = _get_device(request, product_id, device_id)
    if device is None:
        return error_response(
            404, "not_found", f"No device {device_id!r} in product {product_id!r}.", None
        )
    if not request.user.has_perm(SECRET_PERMISSION):
        return error_response(
            403,
            "permission_denied",
            "Connection parameters include a password derived from the device secret; "
            "this needs the permission devices.view_device_secret.",
        )
    try:
        options = ConnectionOptions.from_query(request.GET)
        params = device.connection_params(options)
    except OptionError as error:
        return error_response(400, error.code, error.message, error.field)
    response = JsonResponse(params)
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
    return JsonResponse(description)
