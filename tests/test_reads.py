"""Reads never write: a page or an API GET shows a check whose worker died as interrupted, but
only the worker and the commands store that."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices.choices import CheckStatus, Outcome
from devices.models import ApiToken, ConnectionCheck, process_scope

GONE_PID = 4_194_304 + 1  # above Linux's largest pid: never alive

PAGE = "/products/a1B2c3D4e5F/devices/sensor-001/"
CHECKS_API = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/checks"
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@pytest.fixture
def orphaned_check(device):
    """A check left running by a worker of this host that is gone."""
    return ConnectionCheck.objects.create(
        device=device,
        status=CheckStatus.RUNNING,
        started_at=timezone.now(),
        runner=f"{process_scope()}:{GONE_PID}",
    )


def _writes(queries):
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(WRITES)]


def _get(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return response, _writes(queries.captured_queries)


def test_the_device_page_shows_an_orphaned_check_failed_without_writing(owner_client, orphaned_check):
    response, writes = _get(owner_client, PAGE)
    html = response.content.decode()
    assert f'data-check-id="{orphaned_check.pk}" data-status="failed"' in html
    assert "the worker running this check stopped before it finished" in html
    assert writes == []
    orphaned_check.refresh_from_db()
    assert orphaned_check.status == CheckStatus.RUNNING


def test_the_check_api_shows_an_orphaned_check_interrupted_without_writing(owner_client, orphaned_check):
    for url in (CHECKS_API, f"/api/v1/checks/{orphaned_check.pk}"):
        response, writes = _get(owner_client, url)
        body = response.json()
        check = body["checks"][0] if "checks" in body else body
        assert (check["status"], check["outcome"]) == ("failed", "interrupted")
        assert writes == [], url
    orphaned_check.refresh_from_db()
    assert orphaned_check.status == CheckStatus.RUNNING


def test_the_admin_list_of_checks_shows_an_orphaned_check_failed_without_writing(
    owner_client, orphaned_check
):
    response, writes = _get(owner_client, "/admin/devices/connectioncheck/")
    assert "Failed" in response.content.decode()
    assert writes == []
    orphaned_check.refresh_from_db()
    assert orphaned_check.status == CheckStatus.RUNNING


def test_the_worker_side_stores_what_reads_computed(orphaned_check):
    assert ConnectionCheck.objects.reap_stale() == 1
    orphaned_check.refresh_from_db()
    assert (orphaned_check.status, orphaned_check.outcome) == (CheckStatus.FAILED, Outcome.INTERRUPTED)


@pytest.mark.parametrize(
    "url",
    [
        "/products/",
        "/products/a1B2c3D4e5F/",
        "/devices/",
        PAGE,
        PAGE + "?panel=1",
        PAGE + "debugger/",
        "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params",
        CHECKS_API,
        "/api/v1/openapi.json",
    ],
)
def test_console_and_api_gets_write_nothing(owner_client, orphaned_check, url):
    assert _get(owner_client, url)[1] == []


def test_an_api_token_get_writes_only_its_last_use_at_most_once_a_minute(owner, device):
    """The one bookkeeping write of a read: when a token was last used (shown in the admin)."""
    _record, token = ApiToken.issue(owner)
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params"
    first = _get(client, url)[1]
    assert len(first) == 1 and "last_used_at" in first[0]
    assert _get(client, url)[1] == []
