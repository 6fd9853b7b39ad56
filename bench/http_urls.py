"""The portal's URLs plus ``/bench/bare``: a JsonResponse of the mqtt-params answer's size, the
baseline the HTTP benchmarks compare with (same middleware, same gunicorn). Bench only."""

import json

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from portal.urls import urlpatterns as portal_urlpatterns

# The keys of the mqtt-params answer, values of a typical length.
BARE_BODY = {
    "productId": "bench", "deviceId": "dev-000000", "clientId": "dev-000000", "securemode": 3,
    "signmethod": "hmacsha256", "timestamp": None, "exclusive": False, "host": "127.0.0.1",
    "port": 1883, "mqttClientId": "dev-000000|securemode=3,signmethod=hmacsha256|",
    "mqttUsername": "dev-000000&bench",
    "mqttPassword": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
}


@csrf_exempt
def bare(request):
    if request.method == "POST":  # the hook's POST (bench_http): read and parsed as broker_hook does
        json.loads(request.body)
    response = JsonResponse(BARE_BODY)
    response["Cache-Control"] = "no-store"
    return response


urlpatterns = [path("bench/bare", bare), *portal_urlpatterns]
