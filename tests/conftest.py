"""Shared fixtures: an owner (may see secrets), a member (may not), staff without secrets, an
outsider (no permissions), a product and a device."""

import json
from pathlib import Path

import pytest

# Rewrite the asserts of the shared broker helpers (imported by several test modules); this must
# happen before anything imports them, so here rather than in a test module.
pytest.register_assert_rewrite("tests.broker_fixtures")

from django.contrib.auth.models import Permission  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def default_language():
    """A request in Chinese leaves Chinese active in the test thread (LocaleMiddleware never
    deactivates it); start and end every test in the default language so none depends on order."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(scope="session")
def vectors():
    return json.loads((DATA / "signing.json").read_text())


@pytest.fixture
def owner(django_user_model):
    user = django_user_model.objects.create_user("alice", password="alice-password", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_device_secret"),
        *Permission.objects.filter(content_type__app_label="devices"),
    )
    return django_user_model.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def owner_client(client, owner):
    """The test client, logged in as the owner."""
    client.force_login(owner)
    return client


@pytest.fixture
def member(django_user_model):
    """Logged-in user who may see devices but not their secrets."""
    user = django_user_model.objects.create_user("bob", password="bob-password")
    user.user_permissions.add(Permission.objects.get(codename="view_device"))
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def staff_without_secrets(django_user_model):
    """Staff who may manage devices but not see their secrets."""
    user = django_user_model.objects.create_user("carol", password="carol-password", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="devices").exclude(
            codename="view_device_secret"
        )
    )
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def outsider(django_user_model):
    """Logged-in user with no permissions at all."""
    return django_user_model.objects.create_user("dave", password="dave-password")


@pytest.fixture
def product(db):
    from devices.models import Product

    return Product.objects.create(product_id="a1B2c3D4e5F", name="Thermometer")


@pytest.fixture
def device(product):
    from devices.models import Device

    return Device.objects.create(
        product=product,
        device_id="sensor-001",
        name="Lab sensor",
        device_secret="Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0",
    )
