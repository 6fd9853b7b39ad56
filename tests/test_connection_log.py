"""The connection log's recorder (devices.connection_log): folding, bounds, retention, the
diagnosis it stores, and the words every code has. The broker paths are in
tests/test_connection_log_broker.py, the EMQX path in tests/test_connection_log_emqx.py."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from devices import connection_log, signing
from devices.choices import REFUSAL_TEXT, REFUSALS, SESSION_END_TEXT
from devices.models import ConnectionEvent

SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"  # the conftest device's


@pytest.fixture(autouse=True)
def empty_buffer(db):
    connection_log.flush()
    yield
    connection_log.flush()


def client_id(**extra):
    params = {"securemode": "3", "signmethod": "hmacsha256", **extra}
    return "dev-1|" + ",".join(f"{k}={v}" for k, v in params.items()) + "|"


def refuse(code="bad_signature", password="0" * 64, peer="192.0.2.7:50001", **fields):
    connection_log.record(
        "refused", broker="embedded", code=code, connack=REFUSALS[code].connack, peer=peer,
        transport="tcp", protocol="3.1.1", mqtt_client_id=fields.pop("mqtt_client_id", client_id()),
        username=fields.pop("username", "sensor-001&a1B2c3D4e5F"), password=password, **fields,
    )


def test_every_refusal_code_has_a_reason_and_a_hint_in_both_languages():
    from django.utils import translation

    def both(text):
        with translation.override("en"):
            english = str(text)
        with translation.override("zh-hans"):
            return english, str(text)

    for code in REFUSALS:
        for text in REFUSAL_TEXT[code]:
            english, chinese = both(text)
            assert english and chinese != english, f"{code}: no Chinese for {english!r}"
    for code, texts in SESSION_END_TEXT.items():
        for text in texts:
            if text is not None:
                english, chinese = both(text)
                assert chinese != english, f"{code}: no Chinese for {english!r}"


def test_a_thousand_identical_refusals_fold_into_one_row(device):
    for _ in range(1000):
        refuse(peer=f"192.0.2.7:{50000 + _ % 7}")  # the port left out of the comparison
    assert connection_log.flush() == 1000
    rows = list(ConnectionEvent.objects.filter(device=device))
    assert [(r.kind, r.code, r.count) for r in rows] == [("refused", "bad_signature", 1000)]


def test_refusals_fold_against_the_newest_row_in_the_database(device):
    for _ in range(3):
        refuse()
        connection_log.flush()
    assert list(ConnectionEvent.objects.values_list("count", flat=True)) == [3]


def test_different_hosts_codes_or_client_ids_do_not_fold(device):
    refuse(peer="192.0.2.7:1")
    refuse(peer="192.0.2.8:1")
    refuse(code="device_disabled")
    refuse(mqtt_client_id="other|securemode=3|")
    connection_log.flush()
    assert ConnectionEvent.objects.filter(device=device).count() == 4


def test_an_event_a_minute_after_the_first_starts_a_new_row(device):
    start = timezone.now() - timedelta(minutes=5)
    refuse(at=start)
    refuse(at=start + timedelta(seconds=30))
    refuse(at=start + timedelta(seconds=61))
    connection_log.flush()
    assert sorted(ConnectionEvent.objects.values_list("count", flat=True)) == [1, 2]


def test_at_most_500_events_are_kept_per_device(device):
    start = timezone.now() - timedelta(hours=1)
    for index in range(520):
        refuse(peer=f"198.51.100.{index % 250}:1", mqtt_client_id=client_id(n=index),
               at=start + timedelta(seconds=index))
    connection_log.flush()
    kept = ConnectionEvent.objects.filter(device=device)
    assert kept.count() == 500
    oldest = kept.order_by("last_at").first()
    assert oldest.last_at == start + timedelta(seconds=20)  # the 20 oldest went


def test_prunechecks_deletes_events_older_than_the_retention(device, settings):
    settings.CONNECTION_LOG_DAYS = 7
    now = timezone.now()
    refuse(at=now - timedelta(days=8))
    refuse(code="device_disabled", at=now - timedelta(days=6))
    connection_log.flush()
    call_command("prunechecks", stdout=io.StringIO())
    assert list(ConnectionEvent.objects.values_list("code", flat=True)) == ["device_disabled"]


def test_recording_can_be_turned_off(device, settings):
    settings.CONNECTION_LOG = False
    refuse()
    assert connection_log.flush() == 0
    assert not ConnectionEvent.objects.exists()


def test_an_unknown_device_of_a_known_product_is_logged_on_the_product(product):
    refuse(code="unknown_device", username="ghost&a1B2c3D4e5F")
    refuse(code="unknown_device", username="ghost&no-such-product")
    refuse(code="malformed_username", username="garbage")
    connection_log.flush()
    on_product = ConnectionEvent.objects.get(product=product)
    assert on_product.device is None and on_product.code == "unknown_device"
    assert ConnectionEvent.objects.filter(product=None, device=None).count() == 2


def test_a_wrong_sign_method_is_diagnosed_in_both_languages(device):
    from django.utils import translation

    mqtt_client_id = client_id(timestamp="1732500000123")
    parsed = signing.parse_connect(mqtt_client_id, "sensor-001&a1B2c3D4e5F")
    # The device signs with hmacsha1 while its mqttClientId says hmacsha256.
    content = signing.accepted_contents(parsed)[0]
    password = signing.sign(SECRET, content, "hmacsha1")
    refuse(mqtt_client_id=mqtt_client_id, password=password)
    connection_log.flush()
    event = ConnectionEvent.objects.get(device=device)
    codes = [f["code"] for f in event.findings]
    assert "signed_with_other_method" in codes
    assert "hmacsha1" in event.hint
    with translation.override("zh-hans"):
        assert event.reason == "密码不是该设备密钥的签名。"
        assert any("hmacsha1" in m and "密钥无误" in m for _l, _c, m in event.localized_findings())


def test_the_previous_secret_is_named_after_a_rotation(device):
    old = device.device_secret
    device.rotate_secret()
    mqtt_client_id = client_id()
    parsed = signing.parse_connect(mqtt_client_id, "sensor-001&a1B2c3D4e5F")
    password = signing.sign(old, signing.accepted_contents(parsed)[0], "hmacsha256")
    refuse(mqtt_client_id=mqtt_client_id, password=password)
    connection_log.flush()
    event = ConnectionEvent.objects.get(device=device)
    assert [f["code"] for f in event.findings if f["level"] == "error"] == ["previous_secret"]
    assert "previous secret" in event.hint


def test_securemode_2_on_the_plain_port_and_a_fixed_2050_timestamp_are_named(device):
    mqtt_client_id = client_id(securemode="2", timestamp="2524608000000")
    params = signing.parse_connect(mqtt_client_id, "sensor-001&a1B2c3D4e5F")
    password = signing.sign(SECRET, signing.accepted_contents(params)[0], "hmacsha256")
    refuse(code="securemode_mismatch", mqtt_client_id=mqtt_client_id, password=password)
    connection_log.flush()
    findings = {f["code"]: f for f in ConnectionEvent.objects.get(device=device).findings}
    assert findings["securemode_mismatch"]["level"] == "error"
    assert "plain TCP" in findings["securemode_mismatch"]["en"]
    assert "2050" in findings["fixed_timestamp"]["en"]
    assert "2050" in findings["fixed_timestamp"]["zh"]


def test_an_accepted_connect_hours_away_from_the_clock_carries_a_warning(device):
    hours_ago = str(signing.now_ms() - 5 * 3_600_000)
    connection_log.record("connected", broker="embedded", code="accepted", connack=0,
                          mqtt_client_id=client_id(timestamp=hours_ago),
                          product_id="a1B2c3D4e5F", device_id="sensor-001")
    connection_log.flush()
    event = ConnectionEvent.objects.get(device=device)
    assert [f["code"] for f in event.findings] == ["clock_skew"]
    assert "5.0 hours behind" in event.hint


def test_the_password_is_never_stored(device):
    wrong = "deadbeef" * 8
    refuse(password=wrong)
    connection_log.flush()
    for row in ConnectionEvent.objects.values():
        assert wrong not in repr(row) and SECRET not in repr(row)


def _connected_and_gone(device_id, product_id="a1B2c3D4e5F", **extra):
    connection_log.record("connected", broker="embedded", code="accepted", connack=0,
                          peer="127.0.0.1:40000", transport="tcp", protocol="3.1.1",
                          mqtt_client_id=f"{device_id}|securemode=3|", product_id=product_id,
                          device_id=device_id, **extra)
    connection_log.record("disconnected", broker="embedded", code="client_disconnect",
                          peer="127.0.0.1:40000", transport="tcp", protocol="3.1.1",
                          mqtt_client_id=f"{device_id}|securemode=3|", product_id=product_id,
                          device_id=device_id, session_seconds=1, **extra)


def test_a_flush_of_many_devices_costs_a_few_queries_not_some_per_event(product):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from devices.models import Device

    Device.objects.bulk_create(
        [Device(product=product, device_id=f"many-{n}", device_secret=SECRET) for n in range(60)])
    for n in range(60):
        _connected_and_gone(f"many-{n}")
    with CaptureQueriesContext(connection) as first:
        assert connection_log.flush() == 120
    for _ in range(3):
        for n in range(60):
            _connected_and_gone(f"many-{n}")
    with CaptureQueriesContext(connection) as second:
        assert connection_log.flush() == 360
    # 120 new rows, then 120 folded into them: each flush looks up, inserts or adds, and
    # checks the limit for the whole batch (the old recorder ran three queries per event).
    assert len(first.captured_queries) <= 12, [q["sql"][:80] for q in first.captured_queries]
    assert len(second.captured_queries) <= 12, [q["sql"][:80] for q in second.captured_queries]
    assert ConnectionEvent.objects.count() == 120
    assert set(ConnectionEvent.objects.values_list("count", flat=True)) == {4}


def test_a_fold_into_an_earlier_row_keeps_the_later_last_occurrence(device):
    now = timezone.now()
    refuse(at=now - timedelta(seconds=10))
    connection_log.flush()
    refuse(at=now - timedelta(seconds=20))  # arrives later, happened earlier (another process)
    refuse(at=now - timedelta(seconds=5))
    connection_log.flush()
    row = ConnectionEvent.objects.get(device=device)
    assert (row.count, row.first_at, row.last_at) == (3, now - timedelta(seconds=10),
                                                      now - timedelta(seconds=5))


def test_the_limit_per_device_holds_across_flushes(device):
    start = timezone.now() - timedelta(hours=1)
    for flush_number in range(3):
        for index in range(200):
            n = flush_number * 200 + index
            refuse(peer=f"198.51.100.{n % 250}:1", at=start + timedelta(seconds=n))
        connection_log.flush()
    kept = ConnectionEvent.objects.filter(device=device)
    assert kept.count() == 500
    assert kept.order_by("last_at").first().last_at == start + timedelta(seconds=100)


def test_an_event_queued_while_a_flush_writes_is_written_by_the_next(device, monkeypatch):
    from devices import connection_log as log

    real_write = log._write

    def write_and_record_meanwhile(pending):
        refuse(code="device_disabled")  # the broker records while the flush thread writes
        real_write(pending)

    monkeypatch.setattr(log, "_write", write_and_record_meanwhile)
    refuse()
    assert connection_log.flush() == 1
    monkeypatch.setattr(log, "_write", real_write)
    assert connection_log.flush() == 1
    assert sorted(ConnectionEvent.objects.values_list("code", flat=True)) == [
        "bad_signature", "device_disabled"]


def round_trip_on_this_database():
    """Asserts that the flush's own INSERT and fold UPDATE (SQL sent with executemany) store what
    the ORM reads back; returns the row. tests/test_postgres.py runs it on PostgreSQL."""
    from devices.models import Device, Product

    product = Product.objects.create(product_id="cl-round", name="Round trip")
    device = Device.objects.create(product=product, device_id="cl-dev", device_secret=SECRET)
    at = timezone.now().replace(microsecond=123456) - timedelta(seconds=30)
    hours_ago = str(signing.now_ms() - 5 * 3_600_000)

    def connected(when):
        connection_log.record("connected", broker="embedded", code="accepted", connack=0,
                              peer="[2001:db8::1]:1883", transport="tcp", protocol="3.1.1",
                              mqtt_client_id=f"cl|securemode=3,timestamp={hours_ago}|",
                              product_id="cl-round", device_id="cl-dev", at=when)

    connected(at)
    connection_log.flush()
    connected(at + timedelta(seconds=10))
    connected(at + timedelta(seconds=5))  # older than the row's last: last_at stays the later
    connection_log.flush()
    row = ConnectionEvent.objects.get(device=device)
    assert (row.count, row.first_at, row.last_at) == (3, at, at + timedelta(seconds=10))
    assert (row.product_id, row.kind, row.code, row.connack) == (product.pk, "connected",
                                                                 "accepted", 0)
    assert (row.peer, row.peer_host, row.client_id, row.named_device_id) == (
        "[2001:db8::1]:1883", "2001:db8::1", "cl", "cl-dev")
    assert [f["code"] for f in row.findings] == ["clock_skew"]
    assert "5.0" in row.findings[0]["en"] and row.findings[0]["zh"] != row.findings[0]["en"]
    return row


def test_the_flush_stores_what_the_orm_reads_back(db):
    assert round_trip_on_this_database().count == 3
