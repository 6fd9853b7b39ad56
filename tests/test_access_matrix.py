"""Every URL × every role × GET and POST: no device secret and no valid mqttPassword of a device in
anything a role without devices.view_device_secret is sent (body or headers).

The URLs come from the resolver, so a URL added later is in the matrix without anyone
remembering to add it; a URL parameter this module cannot fill fails the test loudly (add it to
``_value``). Every cell runs in a savepoint that is rolled back, so a POST that rotates a secret
or deletes a device does not change what the next cell sees.
"""

import re

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.urls import resolve
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from devices import signing
from devices.batch import generated_rows, register_batch
from devices.models import ApiToken, AuditEvent, ConnectionCheck, Device
from tests.url_patterns import all_patterns

pytestmark = pytest.mark.sweep  # every URL x every role: out of the quick lane

PATTERNS = list(all_patterns())
ROLES = ["anonymous", "owner", "member", "staff_without_secrets", "outsider", "superuser"]
MAY_SEE_SECRETS = {"owner", "superuser"}  # the roles with devices.view_device_secret
HEX = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32,64}(?![0-9a-fA-F])")
MQTT_CLIENT_ID = re.compile(r"([^\s\"'<>|&;=,]{1,64})\|([^|\s\"'<>]*)\|")
NUMBER = re.compile(r"(?<![0-9])[0-9]{1,19}(?![0-9])")


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("erin", password="erin-password")


@pytest.fixture
def world(settings, product, device, owner, member, staff_without_secrets, outsider, superuser):
    """One object of every kind a URL can name, and the users of every role."""
    from django_tasks_db.models import DBTaskResult

    from devices.tasks import run_check

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    batch = register_batch(product, generated_rows("batch-", 2), user=owner)
    check = ConnectionCheck.objects.create(device=device, options={"securemode": "3"})
    run_check.enqueue(check.pk)
    token, _plain = ApiToken.issue(owner)
    event = AuditEvent.record(AuditEvent.Action.REVEAL_SECRET, owner, [device])
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    lockout_records = [
        AccessAttempt.objects.create(username="alice", ip_address="127.0.0.1", failures_since_start=1),
        AccessFailureLog.objects.create(username="alice", ip_address="127.0.0.1"),
        AccessLog.objects.create(username="alice", ip_address="127.0.0.1"),
    ]
    from django.utils import timezone

    from devices.models import BrokerSession, ConnectionEvent, PendingKick

    emqx_records = [
        BrokerSession.objects.create(
            device=device, username=f"{device.device_id}&{product.product_id}",
            client_id=device.device_id, peerhost="10.0.0.7",
        ),
        PendingKick.objects.create(client_id=f"{device.device_id}&{product.product_id}",
                                   reason="disabled"),
        # The staff-only log lists attempts that name no product.
        ConnectionEvent.objects.create(first_at=timezone.now(), last_at=timezone.now(),
                                       kind="refused", broker="embedded", code="malformed_username",
                                       peer="192.0.2.1:5000", client_id="x", connack=4),
    ]
    objects = {
        obj._meta.model: obj
        for obj in [
            product, device, batch, check, token, event, member, Group.objects.create(name="ops"),
            DBTaskResult.objects.get(), *lockout_records, *emqx_records,
        ]
    }
    users = {"owner": owner, "member": member, "staff_without_secrets": staff_without_secrets,
             "outsider": outsider, "superuser": superuser}
    from devices.models import Trace

    trace = Trace.objects.create(device=device, until=timezone.now() + timezone.timedelta(minutes=5))
    return {"objects": objects, "users": users, "product": product, "device": device,
            "batch": batch, "check": check, "member": member, "trace": trace}


def _admin_model(route):
    """The model of an admin URL such as admin/devices/device/<path:object_id>/change/."""
    parts = route.split("/")
    if parts[0] != "admin" or len(parts) < 3:
        return None
    try:
        return apps.get_model(parts[1], parts[2])
    except (LookupError, ValueError):
        return None


def _value(pattern, name, world):
    """The fixture value for URL parameter ``name`` of ``pattern``; fails loudly when unknown."""
    model = _admin_model(pattern.route)
    if model is not None and name in ("object_id", "id"):
        if model not in world["objects"]:
            pytest.fail(f"{pattern.route}: no fixture object of {model.__name__}; add one to world")
        return world["objects"][model].pk
    if name == "content_type_id":
        return ContentType.objects.get_for_model(Device).pk
    if name == "object_id" and "content_type_id" in pattern.parameters:
        return world["device"].pk
    simple = {
        "product_id": world["product"].product_id,
        "device_id": world["device"].device_id,
        "check_id": world["check"].pk,
        "trace_id": world["trace"].pk,
        "batch_id": world["batch"].pk,
        "app_label": "devices",
        "url": "no-such-page/",
        "uidb64": urlsafe_base64_encode(force_bytes(world["member"].pk)),
        "token": default_token_generator.make_token(world["member"]),
    }
    if name not in simple:
        pytest.fail(f"{pattern.route}: no fixture value for URL parameter {name!r}; add it to _value")
    return simple[name]


def _url(pattern, world):
    url = pattern.route
    for name in pattern.parameters:
        value = str(_value(pattern, name, world))
        if pattern.regex:
            url = re.sub(rf"\(\?P<{name}>[^)]*\)", value, url)
        url = re.sub(rf"<(?:\w+:)?{name}>", value, url)
    url = "/" + url.replace("^", "").replace("$", "")
    match = resolve(url.partition("?")[0])
    # A pattern shadowed by an earlier one with the same route (accounts' login before
    # django.contrib.auth's) is served by that one: what is requested is what a client gets.
    assert match.func is pattern.callback or match.route == pattern.route, (
        f"{url} does not resolve to {pattern.route}"
    )
    return url


def _sent(response):
    body = b"".join(response.streaming_content) if response.streaming else response.content
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return headers + "\n" + body.decode("utf-8", "replace")


def leaks(text, devices):
    """What of ``devices`` (product_id, device_id, secret) ``text`` gives away: a secret, or a
    password that is valid for the device with some clientId and timestamp the text shows."""
    found = []
    hexes = {h.lower() for h in HEX.findall(text)}
    client_ids = {None}
    timestamps = {None, *NUMBER.findall(text)}
    for client_id, extension in MQTT_CLIENT_ID.findall(text):
        client_ids.add(client_id)
        timestamps.update(re.findall(r"timestamp=([0-9]+)", extension))
    for product_id, device_id, secret in devices:
        if secret in text:
            found.append(f"the secret of {device_id}")
        if not hexes:
            continue
        for client_id in client_ids | {device_id}:
            for timestamp in timestamps:
                content = signing.signing_content(product_id, device_id, client_id, timestamp)
                for method in signing.SIGN_METHODS:
                    if signing.sign(secret, content, method) in hexes:
                        found.append(f"a valid mqttPassword of {device_id} ({method}, {content})")
    return found


def _devices():
    return {(d.product.product_id, d.device_id, d.device_secret)
            for d in Device.objects.select_related("product")}


def _cell(world, role, method, url):
    """(status, what leaked) of one request, in a savepoint rolled back afterwards."""
    with transaction.atomic():
        before = _devices()
        client = Client(raise_request_exception=True)
        if role != "anonymous":
            client.force_login(world["users"][role])
        response = client.get(url) if method == "GET" else client.post(url)
        text = _sent(response)
        found = leaks(text, before | _devices())
        transaction.set_rollback(True)
    return response.status_code, found


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.route or "/" for p in PATTERNS])
def test_no_role_without_the_secret_permission_is_sent_a_secret_or_a_password(world, pattern):
    url = _url(pattern, world)
    problems = []
    for role in ROLES:
        for method in ("GET", "POST"):
            status, found = _cell(world, role, method, url)
            if status >= 500:
                problems.append(f"{role} {method} {url}: {status}")
            if found and role not in MAY_SEE_SECRETS:
                problems.append(f"{role} {method} {url} ({status}): {', '.join(found)}")
    assert not problems, "\n".join(problems)


def test_the_matrix_sees_a_secret_and_a_password_where_the_owner_may_see_them(world):
    """The detector is not blind: the owner's mqtt-params answer and the revealed secret are
    seen for what they are."""
    device = world["device"]
    base = f"/api/v1/products/{device.product.product_id}/devices/{device.device_id}"
    _status, found = _cell(world, "owner", "GET", base + "/mqtt-params?securemode=3")
    assert any("valid mqttPassword of sensor-001" in f for f in found), found
    page = f"/products/{device.product.product_id}/devices/{device.device_id}/secret/"
    found = _cell(world, "owner", "GET", page)[1] + _cell(world, "owner", "POST", page)[1]
    assert "the secret of sensor-001" in found


def test_every_url_parameter_of_the_project_can_be_filled(world):
    for pattern in PATTERNS:
        _url(pattern, world)
