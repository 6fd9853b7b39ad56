"""The admin's "Test connection" actions, through HTTP, with a real broker and worker."""

import re

import pytest
from django.contrib.auth.models import Permission

from devices.connection_check import Outcome
from devices.models import ConnectionCheck, Device, DeviceStatus
from tests.broker_fixtures import wait_finished

CHANGELIST_URL = "/admin/devices/device/"


@pytest.fixture
def devices(product):
    return [
        Device.objects.create(product=product, device_id="a-1"),
        Device.objects.create(product=product, device_id="a-2", enabled=False),
        Device.objects.create(product=product, device_id="a-3", status=DeviceStatus.ONLINE),
    ]


def act(client, action, devices):
    return client.post(
        CHANGELIST_URL,
        {"action": action, "_selected_action": [d.pk for d in devices]},
        follow=True,
    )


def test_the_action_queues_checks_at_once_and_links_to_their_progress(
    mqtt_broker, start_worker, client, owner, devices
):
    start_worker(mqtt_broker)
    client.force_login(owner)
    response = act(client, "test_connection", devices)
    html = response.content.decode()
    assert "2 connection checks queued." in html
    assert "Not tested because they are online" in html and "a-3" in html

    checks = {c.device.device_id: c for c in ConnectionCheck.objects.select_related("device")}
    assert set(checks) == {"a-1", "a-2"}
    assert all(c.requested_by == owner for c in checks.values())
    assert wait_finished(checks["a-1"]).outcome == Outcome.ACCEPTED
    assert wait_finished(checks["a-2"]).outcome == Outcome.REFUSED_NOT_AUTHORIZED

    progress = re.search(r'href="(/admin/devices/connectioncheck/\?id__in=[0-9,]+)"', html).group(1)
    listing = client.get(progress.replace("&amp;", "&")).content.decode()
    assert "Connected and published" in listing
    assert "Refused by the broker: not authorized." in listing


def test_the_force_action_also_tests_online_devices(mqtt_broker, start_worker, client, owner, devices):
    start_worker(mqtt_broker)
    client.force_login(owner)
    html = act(client, "test_connection_force", devices[2:]).content.decode()
    assert "1 connection check queued." in html
    assert wait_finished(ConnectionCheck.objects.get()).outcome == Outcome.ACCEPTED


def test_staff_without_the_check_permission_queue_nothing(client, devices, django_user_model):
    user = django_user_model.objects.create_user("dave", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_device"),
                              Permission.objects.get(codename="change_device"))
    client.force_login(user)
    html = act(client, "test_connection", devices).content.decode()
    assert "needs the permission" in html
    assert not ConnectionCheck.objects.exists()
