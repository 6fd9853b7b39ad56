"""A large registry on SQLite: COUNT devices in one product, made with bulk SQL (each secret
encrypted as ``EncryptedSecretField`` stores it), then the pages and endpoints timed in this
process (Django's test client, an owner who may see secrets): each must stay under 100 ms at p95.
Batch registration and a credentials export print their times.

Used by bench_scale.py (1,000,000) and tests/test_scale.py (20,000); not a benchmark module itself.
"""

from __future__ import annotations

import json
import time

SAMPLES = 40
P95_LIMIT_MS = 100


def fill(product, count, chunk=20_000):
    """``count`` devices ``reg-0000000``… in ``product``, by executemany on the devices table;
    seconds taken."""
    from django.db import connection, transaction
    from django.utils import timezone

    from devices.fields import encrypt_secret
    from devices.models import Device, generate_device_secret

    table = Device._meta.db_table
    started = time.perf_counter()
    now = timezone.now().isoformat(sep=" ")
    columns = ("product_id", "device_id", "name", "device_secret", "enabled", "status",
               "created_at", "updated_at", "previous_secret")
    sql = (f'INSERT INTO "{table}" ({", ".join(columns)}) '
           f"VALUES ({', '.join(['%s'] * len(columns))})")
    for start in range(0, count, chunk):
        rows = [(product.pk, f"reg-{i:07d}", f"sensor {i}", encrypt_secret(generate_device_secret()),
                 True, "inactive", now, now, "")
                for i in range(start, min(count, start + chunk))]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return time.perf_counter() - started


def _p95(function):
    function(SAMPLES)  # warm-up: templates compiled, the first connection opened
    seconds = []
    for index in range(SAMPLES):
        started = time.perf_counter()
        function(index)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return seconds[int(len(seconds) * 0.95) - 1] * 1000


def timings(product, count, owner, hook_token):
    """{what: p95 ms} for the pages and endpoints, on a registry of ``count`` devices."""
    from django.conf import settings
    from django.test import Client

    from broker import verifier
    from devices import signing
    from devices.models import ApiToken

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(owner)
    token = ApiToken.issue(owner, "scale")[1]
    pid = product.product_id
    step = max(1, count // SAMPLES)

    def ok(response):
        assert response.status_code == 200, response.status_code
        return response

    def auth(index):
        device_id = f"reg-{(index * step + 7) % count:07d}"
        from devices.models import Device

        secret = Device.objects.get(product=product, device_id=device_id).device_secret
        fields = signing.render(pid, device_id, secret, client_id=device_id, securemode=3,
                                signmethod="hmacsha256", timestamp=None)
        verifier.registry_cache.clear()  # cold: the device is looked up
        started = time.perf_counter()
        response = ok(client.post("/mqtt/auth", json.dumps(
            {"clientid": fields.mqtt_client_id, "username": fields.mqtt_username,
             "password": fields.mqtt_password}), content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {hook_token}"))
        assert response.json()["result"] == "allow"
        return time.perf_counter() - started

    settings.BROKER_HOOK_TOKEN = hook_token
    results = {
        "device list": _p95(lambda i: ok(client.get(f"/devices/?product={pid}&page={i + 1}"))),
        "search": _p95(lambda i: ok(client.get(f"/devices/?q=reg-{(i * step) % count:07d}"))),
        # A part of the name ("sensor 12345" is in 11 names, "sensor 7" in 111,111).
        "search by name": _p95(lambda i: ok(client.get(
            "/devices/", {"q": f"sensor {(i * step + 11) % count}"}))),
        "device page": _p95(lambda i: ok(client.get(
            f"/products/{pid}/devices/reg-{(i * step) % count:07d}/"))),
        "params endpoint": _p95(lambda i: ok(client.get(
            f"/api/v1/products/{pid}/devices/reg-{(i * step + 3) % count:07d}/mqtt-params",
            HTTP_AUTHORIZATION=f"Bearer {token}"))),
    }
    auth_seconds = sorted(auth(i) for i in range(SAMPLES))
    results["cold /mqtt/auth"] = auth_seconds[int(SAMPLES * 0.95) - 1] * 1000
    return results


def batch_times(product, owner, register=10_000, export=100_000):
    """Seconds for a batch registration of ``register`` devices and a credentials export of
    ``export`` devices (CSV, audited)."""
    from devices import batch
    from devices.models import Device

    started = time.perf_counter()
    batch.register_batch(product, batch.generated_rows("new-", register), user=owner)
    registered = time.perf_counter() - started
    devices = Device.objects.filter(product=product).select_related("product").order_by("pk")
    started = time.perf_counter()
    content = batch.export_credentials(devices[:export], owner, detail="scale")
    exported = time.perf_counter() - started
    assert content.count("\r\n") == export + 1
    return registered, exported


def rows(count, register=10_000, export=100_000):
    from django.contrib.auth.models import Permission, User

    from devices.models import Product

    product = Product.objects.create(product_id="registry", name="Large registry")
    owner = User.objects.create_user("scale-owner", password="scale-owner-password-1")
    owner.user_permissions.add(*Permission.objects.filter(content_type__app_label="devices"))
    owner = User.objects.get(pk=owner.pk)
    filled = fill(product, count)
    extra = {"devices": count}
    out = [{"benchmark": "large registry", "metric": "bulk fill", "value": filled, "unit": "s",
            **extra}]
    for what, ms in timings(product, count, owner, "scale-hook-token").items():
        out.append({"benchmark": f"large registry, {what}", "metric": "p95", "value": ms,
                    "unit": "ms", **extra, "under_100_ms": ms < P95_LIMIT_MS})
    registered, exported = batch_times(product, owner, register, min(export, count))
    out += [
        {"benchmark": "large registry", "metric": f"batch registration of {register:,}",
         "value": registered, "unit": "s", **extra},
        {"benchmark": "large registry", "metric": f"credentials export of {min(export, count):,}",
         "value": exported, "unit": "s", **extra},
    ]
    return out
