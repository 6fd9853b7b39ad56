"""Batch registration without HTTP: building rows, validating the whole batch, writing it."""

import csv
import io

import pytest
from django.db import connection

from devices import batch as batches
from devices.models import AuditEvent, Device, RegistrationBatch

pytestmark = pytest.mark.django_db


def raw_secret(device):
    with connection.cursor() as cursor:
        cursor.execute("SELECT device_secret FROM devices_device WHERE id = %s", [device.pk])
        return cursor.fetchone()[0]


def test_it_generates_zero_padded_running_numbers_and_names():
    rows = batches.generated_rows("sensor-", 3, start=9, width=4, name_prefix="Sensor ")
    assert [(r.row, r.device_id, r.name) for r in rows] == [
        (1, "sensor-0009", "Sensor 0009"),
        (2, "sensor-0010", "Sensor 0010"),
        (3, "sensor-0011", "Sensor 0011"),
    ]


def test_it_generates_unpadded_numbers_without_names():
    rows = batches.generated_rows("d", 2, start=99)
    assert [(r.device_id, r.name) for r in rows] == [("d99", ""), ("d100", "")]


@pytest.mark.parametrize("count", [0, -1, 10_001])
def test_it_refuses_a_count_outside_1_to_10000(count):
    with pytest.raises(batches.BatchError) as error:
        batches.generated_rows("d", count)
    assert "1 to 10000" in error.value.message


def test_it_refuses_a_prefix_with_a_space_once_not_for_every_row():
    with pytest.raises(batches.BatchError) as error:
        batches.generated_rows("bad prefix", 500)
    assert len(error.value.problems) == 1
    assert "'bad prefix'" in error.value.message


def test_it_registers_a_generated_batch_with_encrypted_distinct_secrets(product, owner):
    rows = batches.generated_rows("gen-", 50, width=3)
    batch = batches.register_batch(product, rows, owner)
    assert batch.device_count == 50
    assert batch.source == "generated"
    assert batch.created_by == owner
    devices = list(Device.objects.filter(batch=batch))
    assert len(devices) == 50
    secrets = {d.device_secret for d in devices}
    assert len(secrets) == 50
    assert all(len(s) == 32 and s.isalnum() for s in secrets)
    sample = devices[0]
    assert raw_secret(sample).startswith("fernet:")
    assert sample.device_secret not in raw_secret(sample)


def test_one_bad_row_creates_nothing_and_the_message_names_the_row(product, owner):
    rows = [batches.BatchRow(n, f"ok-{n}") for n in range(1, 10)]
    rows[6] = batches.BatchRow(7, "has|pipe")
    with pytest.raises(batches.BatchError) as error:
        batches.register_batch(product, rows, owner)
    assert error.value.problems[0][0] == 7
    assert "Row 7" in error.value.message
    assert "has|pipe" in error.value.message
    assert "letters, digits and - _ . : @" in error.value.message
    assert Device.objects.count() == 0
    assert RegistrationBatch.objects.count() == 0


def test_a_duplicate_inside_the_batch_names_both_rows(product):
    rows = [batches.BatchRow(1, "a"), batches.BatchRow(2, "b"), batches.BatchRow(3, "a")]
    problems = batches.validate_rows(product, rows)
    assert problems == [(3, "deviceId 'a' is already in row 1 of this batch.")]


def test_a_device_the_product_already_has_is_a_collision(product, device):
    rows = [batches.BatchRow(1, "new-one"), batches.BatchRow(2, device.device_id)]
    with pytest.raises(batches.BatchError) as error:
        batches.register_batch(product, rows)
    assert "Row 2" in error.value.message
    assert "already has a device 'sensor-001'" in error.value.message
    assert not Device.objects.filter(device_id="new-one").exists()


def test_the_same_device_id_in_another_product_is_fine(product, device):
    from devices.models import Product

    other = Product.objects.create(product_id="other-product", name="Other")
    batches.register_batch(other, [batches.BatchRow(1, device.device_id)])
    assert Device.objects.filter(device_id=device.device_id).count() == 2


def test_a_name_over_200_characters_is_refused(product):
    problems = batches.validate_rows(product, [batches.BatchRow(4, "x", "n" * 201)])
    assert problems[0][0] == 4
    assert "200" in problems[0][1]


def test_the_message_lists_ten_problems_and_counts_the_rest(product):
    rows = [batches.BatchRow(n, "bad id") for n in range(1, 26)]
    message = batches.BatchError(batches.validate_rows(product, rows)).message
    assert "Row 10:" in message
    assert "Row 11:" not in message
    assert "15 more problems" in message


def test_csv_with_bom_header_names_and_blank_lines():
    data = "\ufeffdeviceId,name\r\nsensor-1,Kitchen\r\n\r\nsensor-2\r\n sensor-3 , Hall 温度 \r\n"
    rows = batches.rows_from_csv(data.encode("utf-8"))
    assert [(r.row, r.device_id, r.name) for r in rows] == [
        (2, "sensor-1", "Kitchen"),
        (4, "sensor-2", ""),
        (5, "sensor-3", "Hall 温度"),
    ]


def test_csv_without_header_or_bom():
    rows = batches.rows_from_csv(b"a-1\na-2,Second\n")
    assert [(r.row, r.device_id, r.name) for r in rows] == [(1, "a-1", ""), (2, "a-2", "Second")]


def test_csv_with_too_many_columns_names_the_line():
    with pytest.raises(batches.BatchError) as error:
        batches.rows_from_csv(b"deviceId,name\na,b\nc,d,e\n")
    assert error.value.problems == [(3, "expected deviceId and an optional name, found 3 columns.")]


def test_csv_that_is_not_utf8_is_refused_with_its_line():
    with pytest.raises(batches.BatchError) as error:
        batches.rows_from_csv("a\nb\nc\u00e9".encode("latin-1"))
    assert error.value.problems[0][0] == 3
    assert "UTF-8" in error.value.message


def test_an_empty_csv_is_refused():
    with pytest.raises(batches.BatchError) as error:
        batches.rows_from_csv(b"deviceId,name\n\n")
    assert "no deviceId" in error.value.message


def test_a_csv_over_10000_rows_is_refused(product):
    data = "\n".join(f"d{n}" for n in range(10_001)).encode()
    with pytest.raises(batches.BatchError) as error:
        batches.register_batch(product, batches.rows_from_csv(data))
    assert "at most 10000" in error.value.message
    assert Device.objects.count() == 0


def test_export_writes_the_three_columns_and_records_who_and_which(product, owner):
    batch = batches.register_batch(product, batches.generated_rows("e", 3), owner)
    content = batches.export_credentials(batches.batch_devices(batch), owner, "test")
    lines = list(csv.reader(io.StringIO(content)))
    expected = [
        [product.product_id, d.device_id, d.device_secret]
        for d in Device.objects.filter(batch=batch).order_by("pk")
    ]
    assert lines == [["productId", "deviceId", "deviceSecret"], *expected]
    event = AuditEvent.objects.get()
    assert event.action == AuditEvent.Action.EXPORT_CREDENTIALS
    assert event.actor == owner
    assert event.targets == [f"{product.product_id}/e{n}" for n in (1, 2, 3)]
