"""``manage.py checkconnections`` and ``manage.py prunechecks``, with a real broker and worker."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from devices.models import CheckStatus, ConnectionCheck, Device, DeviceStatus, Product


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def fleet(product):
    other = Product.objects.create(product_id="other-product", name="Other")
    return {
        "ok": Device.objects.create(product=product, device_id="ok-1"),
        "disabled": Device.objects.create(product=product, device_id="off-1", enabled=False),
        "online": Device.objects.create(product=product, device_id="live-1",
                                        status=DeviceStatus.ONLINE),
        "elsewhere": Device.objects.create(product=other, device_id="else-1"),
    }


def test_it_checks_a_products_enabled_offline_devices_and_summarises(
    mqtt_broker, start_worker, fleet
):
    start_worker(mqtt_broker)
    out = io.StringIO()
    call_command("checkconnections", "--product", "a1B2c3D4e5F", stdout=out)
    text = out.getvalue()
    assert "ok-1&a1B2c3D4e5F: succeeded" in text
    assert "Skipped 1 online device(s)" in text and "live-1" in text
    assert "Summary: 1 checked, 1 succeeded, 0 failed." in text
    assert "accepted: 1" in text
    assert "\r" not in text  # not a terminal: no progress bar
    checked = set(ConnectionCheck.objects.values_list("device__device_id", flat=True))
    assert checked == {"ok-1"}


def test_failures_are_listed_and_make_the_exit_status_1(mqtt_broker, start_worker, fleet):
    start_worker(mqtt_broker)
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("checkconnections", "--all", "--include-disabled", stdout=out)
    assert raised.value.returncode == 1
    text = out.getvalue()
    assert "Summary: 3 checked, 2 succeeded, 1 failed." in text
    assert "FAILED off-1&a1B2c3D4e5F: Refused by the broker: not authorized." in text
    assert "refused_not_authorized: 1" in text


def test_on_a_terminal_it_draws_a_progress_bar(mqtt_broker, start_worker, fleet):
    start_worker(mqtt_broker)
    out = FakeTerminal()
    call_command("checkconnections", "--all", "--force", stdout=out)
    text = out.getvalue()
    assert "\r[" + "." * 30 + "] 0/3" in text
    assert "\r[" + "#" * 30 + "] 3/3  succeeded 3  failed 0" in text
    assert "Summary: 3 checked, 3 succeeded, 0 failed." in text


def test_it_says_which_devices_it_needs(db):
    with pytest.raises(CommandError, match="--product P"):
        call_command("checkconnections")
    with pytest.raises(CommandError, match="Unknown product.*nope"):
        call_command("checkconnections", "--product", "nope")


def test_without_a_worker_it_gives_up_and_says_why(db, fleet, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("checkconnections", "--product", "other-product", "--timeout", "0.5",
                     stdout=out)
    assert "1 unfinished" in out.getvalue()
    assert "is the worker running" in out.getvalue()
    assert ConnectionCheck.objects.get().status == CheckStatus.QUEUED


# --- prunechecks ------------------------------------------------------------------------------


def test_prunechecks_deletes_finished_checks_older_than_the_retention(device, settings):
    settings.CHECK_RETENTION_DAYS = 30
    now = timezone.now()

    def check(status, days_ago):
        when = now - timezone.timedelta(days=days_ago)
        return ConnectionCheck.objects.create(
            device=device, status=status, queued_at=when, started_at=when,
            finished_at=when if status in ("succeeded", "failed") else None,
            runner="elsewhere:1",
        )

    old_ok, old_failed = check("succeeded", 31), check("failed", 45)
    recent = check("failed", 29)
    queued = ConnectionCheck.objects.create(device=device, queued_at=now - timezone.timedelta(days=90))

    out = io.StringIO()
    call_command("prunechecks", "--dry-run", stdout=out)
    assert "2 connection checks older than 30 days would be deleted" in out.getvalue()
    assert ConnectionCheck.objects.count() == 4

    call_command("prunechecks", stdout=io.StringIO())
    assert set(ConnectionCheck.objects.values_list("pk", flat=True)) == {recent.pk, queued.pk}
    assert not ConnectionCheck.objects.filter(pk__in=[old_ok.pk, old_failed.pk]).exists()

    call_command("prunechecks", "--days", "1", stdout=io.StringIO())
    assert list(ConnectionCheck.objects.values_list("pk", flat=True)) == [queued.pk]


def test_prunechecks_refuses_a_retention_below_one_day(db):
    with pytest.raises(CommandError, match="at least 1"):
        call_command("prunechecks", "--days", "0")


def test_while_it_waits_it_loads_each_finished_check_once_and_no_secret(
    db, product, monkeypatch
):
    """Each poll reads ids; a check's row is loaded once, when it is newly finished, without
    the device's secret (before: every poll loaded every check finished in the last 30 s and
    decrypted its device's secret, the command's main cost over a fleet)."""
    from devices import fields
    from devices.choices import Outcome
    from devices.management.commands import checkconnections

    devices = [Device.objects.create(product=product, device_id=f"wait-{i}") for i in range(5)]
    checks = [ConnectionCheck.objects.create(device=d, status=CheckStatus.RUNNING,
                                             runner="elsewhere:1", started_at=timezone.now())
              for d in devices]
    unfinished = list(checks)

    def one_finishes_per_poll(_seconds):  # the worker, as the command's polls see it
        unfinished.pop(0).finish(Outcome.ACCEPTED)

    loads, decrypted = [], []

    real_from_db = ConnectionCheck.from_db.__func__

    def counting_from_db(cls, db, field_names, values):
        if "outcome" in field_names:  # a result (reap_stale reads the running checks' state)
            loads.append(values[list(field_names).index("id")])
        return real_from_db(cls, db, field_names, values)

    real_decrypt = fields.decrypt_secret
    monkeypatch.setattr(checkconnections.time, "sleep", one_finishes_per_poll)
    monkeypatch.setattr(ConnectionCheck, "from_db", classmethod(counting_from_db))
    monkeypatch.setattr(fields, "decrypt_secret",
                        lambda stored: decrypted.append(1) or real_decrypt(stored))
    out = io.StringIO()
    command = checkconnections.Command(stdout=out)
    finished = command.wait(checks, timeout=30)
    assert sorted(finished) == sorted(c.pk for c in checks)
    assert sorted(loads) == sorted(c.pk for c in checks)  # each row once
    assert decrypted == []
    assert out.getvalue().count(": succeeded — ") == 5
    assert "wait-0&a1B2c3D4e5F: succeeded" in out.getvalue()


def test_a_locked_database_while_it_waits_is_waited_out_not_a_traceback(
    db, fleet, settings, monkeypatch
):
    """The reaper's writes queue for SQLite's one write lock (a batch import, an export); when
    the lock outlasts its timeout the command says so on stderr and keeps waiting and polling."""
    from django.db import OperationalError

    from devices.models import ConnectionCheckQuerySet

    def locked(self, now=None):
        raise OperationalError("database is locked")

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    monkeypatch.setattr(ConnectionCheckQuerySet, "reap_stale", locked)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):
        call_command("checkconnections", "--product", "other-product", "--timeout", "0.5",
                     stdout=out, stderr=err)
    assert "Summary: 1 checked, 0 succeeded, 0 failed, 1 unfinished." in out.getvalue()
    assert "The database is locked; still waiting" in err.getvalue()
