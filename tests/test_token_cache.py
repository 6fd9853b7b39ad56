"""API tokens are resolved at most 1 s ago (devices/token_cache.py): a revoked token, a
deactivated user and a removed permission take effect within that bound."""

import time

import pytest
from django.contrib.auth.models import Permission

from devices import token_cache
from devices.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def params_url(device):
    return f"/api/v1/products/{device.product.product_id}/devices/{device.device_id}/mqtt-params"


@pytest.fixture
def token(owner):
    token_cache.clear()
    return ApiToken.issue(owner, "cache test")[1]


def _get(client, url, token):
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")


def _status_after_ttl(client, url, token):
    time.sleep(token_cache.TTL_S + 0.05)
    return _get(client, url, token).status_code


def test_a_deleted_token_is_refused_within_the_ttl(client, params_url, token):
    assert _get(client, params_url, token).status_code == 200
    ApiToken.objects.all().delete()
    assert _status_after_ttl(client, params_url, token) == 401


def test_a_deactivated_user_is_refused_within_the_ttl(client, params_url, token, owner):
    assert _get(client, params_url, token).status_code == 200
    owner.is_active = False
    owner.save()
    assert _status_after_ttl(client, params_url, token) == 401


def test_a_removed_permission_is_refused_within_the_ttl(client, params_url, token, owner):
    assert _get(client, params_url, token).status_code == 200
    owner.user_permissions.remove(Permission.objects.get(codename="view_device_secret"))
    assert _status_after_ttl(client, params_url, token) == 403


def test_a_cached_answer_asks_no_query_for_token_or_permissions(
    client, params_url, token, django_assert_max_num_queries
):
    assert _get(client, params_url, token).status_code == 200
    # The throttle's look-up (uncached, by design) and the device.
    with django_assert_max_num_queries(2):
        assert _get(client, params_url, token).status_code == 200


def test_each_request_gets_its_own_user_object(token):
    first, second = token_cache.authenticate(token), token_cache.authenticate(token)
    assert first == second and first is not second
    assert token_cache.authenticate("dpt_unknown") is None
