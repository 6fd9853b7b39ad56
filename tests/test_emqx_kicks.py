"""Disable, rotate and delete disconnect the device from EMQX at once through its REST API
(issue 9, item 11), against a fake of that API on 127.0.0.1 (tests/fake_emqx_api.py); a kick
EMQX did not confirm is retried, never lost."""

import base64
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from devices import emqx
from devices.models import Device, PendingKick
from tests.emqx_player import Emqx, NotAuthorized
from tests.fake_emqx_api import FakeEmqxApi

USERNAME = "sensor-001&a1B2c3D4e5F"


@pytest.fixture
def api(settings):
    fake = FakeEmqxApi().start()
    settings.EMQX_API_URL = fake.url
    settings.EMQX_API_KEY = fake.key
    settings.EMQX_API_SECRET = fake.secret
    settings.EMQX_API_TIMEOUT = 2
    fake.connected.add(USERNAME)  # the device is connected to EMQX
    yield fake
    fake.stop()


@pytest.fixture
def commits(django_capture_on_commit_callbacks):
    """Run what waits for the commit (the kick task), as a real request's commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def fresh(device):
    return Device.objects.select_related("product").get(pk=device.pk)


def closed_port_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- every way of disabling, rotating, deleting ---------------------------------------------------


def test_disabling_in_the_console_kicks_the_device(api, commits, owner_client, device):
    with commits():
        response = owner_client.post(
            "/products/a1B2c3D4e5F/devices/sensor-001/enabled/", {"enabled": "false"}
        )
    assert response.status_code == 302
    assert api.kicked() == [USERNAME] and USERNAME not in api.connected
    assert not PendingKick.objects.exists()


def test_the_admin_disable_action_kicks_every_selected_device(api, commits, owner_client, device,
                                                             product):
    other = Device.objects.create(product=product, device_id="sensor-002")
    api.connected.add("sensor-002&a1B2c3D4e5F")
    with commits():
        response = owner_client.post("/admin/devices/device/", {
            "action": "disable_devices", "_selected_action": [device.pk, other.pk],
        })
    assert response.status_code == 302
    assert sorted(api.kicked()) == [USERNAME, "sensor-002&a1B2c3D4e5F"]
    assert not Device.objects.filter(enabled=True).exists()


def test_the_admin_change_form_kicks_a_device_it_disables(api, commits, owner_client, device):
    with commits():
        response = owner_client.post(f"/admin/devices/device/{device.pk}/change/",
                                     {"name": "thermometer"})  # "enabled" unticked
    assert response.status_code == 302, response.content[:2000]
    assert fresh(device).enabled is False
    assert api.kicked() == [USERNAME]


def test_the_queryset_method_kicks_only_devices_it_disables(api, commits, device, product):
    Device.objects.create(product=product, device_id="already-off", enabled=False)
    with commits():
        assert Device.objects.all().set_enabled(False) == 2
    assert api.kicked() == [USERNAME]


def test_enabling_or_saving_an_enabled_device_kicks_nobody(api, commits, device):
    with commits():
        fresh(device).set_enabled(True)
        fresh(device).save()
        Device.objects.all().set_enabled(True)
    assert api.requests == [] and not PendingKick.objects.exists()


def test_rotating_the_secret_kicks_the_device(api, commits, owner_client, device):
    with commits():
        response = owner_client.post("/products/a1B2c3D4e5F/devices/sensor-001/rotate/")
    assert response.status_code == 302
    assert api.kicked() == [USERNAME]


def test_deleting_a_device_kicks_it(api, commits, device):
    with commits():
        Device.objects.filter(pk=device.pk).delete()
    assert api.kicked() == [USERNAME]


def test_the_client_id_is_url_quoted(api, commits, product):
    odd = Device.objects.create(product=product, device_id="a:b@c.d")
    with commits():
        odd.set_enabled(False)
    assert api.requests == [("DELETE", "/api/v5/clients/a%3Ab%40c.d%26a1B2c3D4e5F")]


def test_without_emqx_configured_nothing_is_queued(settings, commits, device):
    settings.EMQX_API_URL = ""
    with commits():
        fresh(device).set_enabled(False)
        fresh(device).rotate_secret()
    assert not PendingKick.objects.exists()


# -- answers: 204, 404, 401, 500, down ------------------------------------------------------------


def test_a_device_emqx_does_not_have_counts_as_kicked(api, commits, device):
    api.connected.clear()
    with commits():
        fresh(device).set_enabled(False)
    assert api.kicked() == [USERNAME]  # answered 404
    assert not PendingKick.objects.exists()


def test_a_500_is_logged_and_retried_after_a_backoff(api, commits, device, caplog):
    api.fail_with = 500
    with commits():
        fresh(device).set_enabled(False)
    kick = PendingKick.objects.get()
    assert (kick.attempts, kick.client_id, kick.reason) == (1, USERNAME, "disabled")
    assert kick.last_error.startswith("HTTP 500")
    assert "Could not make EMQX disconnect" in caplog.text and USERNAME in caplog.text
    assert kick.next_attempt_at > timezone.now()

    api.fail_with = None
    api.requests.clear()
    assert emqx.send_due_kicks()["sent"] == 0  # not due yet: no request at all
    assert api.requests == []
    assert emqx.send_due_kicks(now=kick.next_attempt_at)["sent"] == 1
    assert api.kicked() == [USERNAME] and not PendingKick.objects.exists()


def test_backoff_doubles_up_to_five_minutes():
    waits = [emqx.backoff(attempt).total_seconds() for attempt in (1, 2, 3, 4, 20)]
    assert waits == [1, 2, 4, 8, 300]


def test_a_kick_waits_while_emqx_is_down_and_is_sent_when_it_is_back(api, settings, commits,
                                                                    device):
    settings.EMQX_API_URL = closed_port_url()
    with commits():
        fresh(device).rotate_secret()
    kick = PendingKick.objects.get()
    assert kick.attempts == 1 and kick.last_error and kick.reason == "secret_rotated"
    later = timezone.now() + timedelta(minutes=10)
    assert emqx.send_due_kicks(now=later)["failed"] == 1  # still down: kept
    assert PendingKick.objects.get().attempts == 2

    settings.EMQX_API_URL = api.url  # EMQX is back (a new process would do just the same)
    assert emqx.send_due_kicks(now=later + timedelta(minutes=10))["sent"] == 1
    assert api.kicked() == [USERNAME] and not PendingKick.objects.exists()


def test_a_wrong_api_key_is_kept_and_its_secret_never_logged(api, settings, commits, device,
                                                            caplog):
    settings.EMQX_API_SECRET = "wrong-secret-also-not-logged"
    with commits():
        fresh(device).set_enabled(False)
    kick = PendingKick.objects.get()
    assert kick.last_error == "HTTP 401 BAD_API_KEY_OR_SECRET"
    assert "BAD_API_KEY_OR_SECRET" in caplog.text
    for secret in ("wrong-secret-also-not-logged", api.secret):
        assert secret not in caplog.text
        assert base64.b64encode(f"{api.key}:{secret}".encode()).decode() not in caplog.text


def test_a_failed_kick_is_queued_again_in_the_database_queue(api, settings, commits, device):
    """A restart loses nothing: the kick is a row and its retry a deferred task of the database
    queue, which the worker runs when it is due."""
    from django_tasks import task_backends
    from django_tasks_db.models import DBTaskResult

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    task_backends._backends = {}  # noqa: SLF001 (pick up the changed setting)
    try:
        api.fail_with = 503
        with commits():
            fresh(device).set_enabled(False)
        first = DBTaskResult.objects.get()
        assert first.task_path == "devices.emqx.send_kicks"
        emqx.send_kicks.call()  # what the worker runs
        kick = PendingKick.objects.get()
        retry = DBTaskResult.objects.exclude(pk=first.pk).get()
        assert retry.run_after == kick.next_attempt_at
    finally:
        task_backends._backends = {}  # noqa: SLF001


def test_the_sendkicks_command_sends_the_due_kicks(api, device):
    from django.core.management import call_command

    PendingKick.objects.create(client_id=USERNAME, reason="disabled")
    call_command("sendkicks")
    assert api.kicked() == [USERNAME] and not PendingKick.objects.exists()


# -- exclusive holders EMQX no longer has ---------------------------------------------------------


def test_an_exclusive_holder_emqx_no_longer_has_is_forgotten(api, client, settings, device):
    from devices.options import ConnectionOptions

    settings.BROKER_HOOK_TOKEN = "kicks-token"
    settings.MQTT_AUTH_CACHE_MS = 0
    broker = Emqx(client, "kicks-token")

    def creds(**options):
        params = device.connection_params(ConnectionOptions(securemode=3, **options))
        return params["mqttClientId"], params["mqttUsername"], params["mqttPassword"]

    broker.connect("tcp", *creds(exclusive=True))
    with pytest.raises(NotAuthorized):  # EMQX still has it: refused
        broker.connect("tcp", *creds(client_id="serial-77"))
    api.connected.clear()  # EMQX restarted; the disconnect never reached the portal
    assert broker.connect("tcp", *creds(client_id="serial-77")).alive
    assert ("GET", "/api/v5/clients/sensor-001%26a1B2c3D4e5F") in api.requests


def test_deleting_many_devices_sends_once(api, commits, product, monkeypatch):
    Device.objects.bulk_create(
        [Device(product=product, device_id=f"bulk-{n}") for n in range(5)]
    )
    sends = []
    monkeypatch.setattr(emqx, "_enqueue", lambda run_after=None: sends.append(run_after))
    with commits():
        Device.objects.filter(device_id__startswith="bulk-").delete()
    assert PendingKick.objects.count() == 5 and sends == [None]
