"""Credentials for people: a workbook whose every cell is text, beside the exact CSV for machines.

A spreadsheet opening the CSV reads ``-2-3-144272509`` and ``=1+1`` as formulas, ``@SUM`` as a
function, ``0012`` as 12 and ``1E5`` as 100000; the workbook must give each back as written."""

import io
import zipfile

import openpyxl
import pytest

from devices import batch as batches
from devices import xlsx
from devices.models import AuditEvent, Device, Product

CHANGELIST_URL = "/admin/devices/device/"
# Ids a spreadsheet would mangle, all valid productIds/deviceIds; secrets may hold more.
MANGLED_IDS = ["-2-3-144272509", "@SUM", "0012", "1E5", "1.5e-3", "3:45", "00:1A:2B"]
MANGLED_SECRETS = ["=1+1", "@SUM", "-2-3-144272509", "0012", "1E5", '=HYPERLINK("http://x")',
                   "TRUE", "2026-12-01", "+4915112345678"]


@pytest.fixture
def mangled_product(db):
    return Product.objects.create(product_id="0012", name="Spreadsheet food")


def workbook_rows(content):
    """Every cell of the first sheet as (type, value, number format), read by openpyxl."""
    book = openpyxl.load_workbook(io.BytesIO(content))
    sheet = book.worksheets[0]
    return [[(cell.data_type, cell.value, cell.number_format) for cell in row]
            for row in sheet.iter_rows()]


def assert_all_text(rows, expected):
    assert [[value for _type, value, _format in row] for row in rows] == expected
    for row in rows:
        for data_type, value, number_format in row:
            assert data_type == "s" and isinstance(value, str)
            assert number_format == "@"  # formatted as Text, so an edit keeps it text


def register(product, device_ids):
    rows = [batches.BatchRow(row=i, device_id=d) for i, d in enumerate(device_ids, start=1)]
    return batches.register_batch(product, rows)


# -- the batch download -------------------------------------------------------------------------


def test_the_batch_workbook_gives_every_id_back_as_text(owner_client, owner, mangled_product):
    batch = register(mangled_product, MANGLED_IDS)
    response = owner_client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.xlsx")
    assert response.status_code == 200
    assert response["Content-Type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert response["Content-Disposition"] == (
        f'attachment; filename="credentials-0012-batch{batch.pk}.xlsx"')
    assert "no-store" in response["Cache-Control"]
    secrets = {d.device_id: d.device_secret for d in Device.objects.filter(batch=batch)}
    assert_all_text(
        workbook_rows(response.content),
        [["productId", "deviceId", "deviceSecret"]]
        + [["0012", device_id, secrets[device_id]] for device_id in MANGLED_IDS],
    )


def test_the_batch_workbook_is_audited_as_the_csv_is(owner_client, owner, mangled_product):
    batch = register(mangled_product, MANGLED_IDS[:2])
    owner_client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.csv")
    owner_client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.xlsx")
    csv_event, xlsx_event = AuditEvent.objects.order_by("pk")
    for event in (csv_event, xlsx_event):
        assert event.action == AuditEvent.Action.EXPORT_CREDENTIALS
        assert (event.actor, event.actor_name, event.device_count) == (owner, "alice", 2)
        assert event.targets == ["0012/-2-3-144272509", "0012/@SUM"]
    assert "xlsx" in xlsx_event.detail and "xlsx" not in csv_event.detail


def test_the_csv_stays_byte_exact(owner_client, mangled_product):
    batch = register(mangled_product, MANGLED_IDS)
    response = owner_client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.csv")
    secrets = {d.device_id: d.device_secret for d in Device.objects.filter(batch=batch)}
    expected = "productId,deviceId,deviceSecret\r\n" + "".join(
        f"0012,{device_id},{secrets[device_id]}\r\n" for device_id in MANGLED_IDS
    )
    assert response.content == expected.encode("utf-8")  # no quote, no apostrophe, nothing added


def test_the_batch_workbook_needs_the_secret_permission(client, staff_without_secrets,
                                                        mangled_product):
    batch = register(mangled_product, MANGLED_IDS[:1])
    client.force_login(staff_without_secrets)
    page = client.get(f"/admin/devices/device/batch/{batch.pk}/").content.decode()
    assert "credentials.xlsx" not in page
    response = client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.xlsx")
    assert response.status_code == 403
    assert not AuditEvent.objects.exists()


def test_a_get_of_the_workbook_url_downloads_nothing(owner_client, mangled_product):
    batch = register(mangled_product, MANGLED_IDS[:1])
    response = owner_client.get(f"/admin/devices/device/batch/{batch.pk}/credentials.xlsx")
    assert response.status_code == 302
    assert not AuditEvent.objects.exists()


def test_the_batch_page_offers_both_files_and_says_which_is_for_whom(owner_client,
                                                                    mangled_product):
    batch = register(mangled_product, MANGLED_IDS[:1])
    page = owner_client.get(f"/admin/devices/device/batch/{batch.pk}/").content.decode()
    assert f'action="/admin/devices/device/batch/{batch.pk}/credentials.csv"' in page
    assert f'formaction="/admin/devices/device/batch/{batch.pk}/credentials.xlsx"' in page
    assert "for machines" in page
    zh = owner_client.get(f"/admin/devices/device/batch/{batch.pk}/",
                          HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert "电子表格" in zh and "for machines" not in zh


# -- the admin action ---------------------------------------------------------------------------


def test_the_export_action_gives_every_secret_back_as_text(owner_client, owner, mangled_product):
    devices = [
        Device.objects.create(product=mangled_product, device_id=f"d{i}", device_secret=secret)
        for i, secret in enumerate(MANGLED_SECRETS)
    ]
    response = owner_client.post(
        CHANGELIST_URL,
        {"action": "export_credentials_xlsx", "_selected_action": [d.pk for d in devices]},
    )
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert_all_text(
        workbook_rows(response.content),
        [["productId", "deviceId", "deviceSecret"]]
        + [["0012", f"d{i}", secret] for i, secret in enumerate(MANGLED_SECRETS)],
    )
    event = AuditEvent.objects.get()
    assert event.action == AuditEvent.Action.EXPORT_CREDENTIALS
    assert event.actor == owner and event.device_count == len(MANGLED_SECRETS)


def test_the_export_action_is_not_offered_without_the_permission(client, staff_without_secrets,
                                                                device):
    client.force_login(staff_without_secrets)
    page = client.get(CHANGELIST_URL).content.decode()
    assert 'value="export_credentials_xlsx"' not in page
    response = client.post(
        CHANGELIST_URL, {"action": "export_credentials_xlsx", "_selected_action": [device.pk]}
    )
    assert device.device_secret.encode() not in response.content
    assert not AuditEvent.objects.exists()


# -- the workbook itself ------------------------------------------------------------------------


def sheet_xml(content):
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return archive.read("xl/worksheets/sheet1.xml").decode("utf-8")


def test_no_cell_is_a_formula_or_a_number_in_the_xml():
    content = xlsx.text_workbook([["=1+1", "1E5", "<&>"]])
    xml = sheet_xml(content)
    assert xml.count('t="inlineStr"') == 3
    assert "<f>" not in xml and "<v>" not in xml
    assert "&lt;&amp;&gt;" in xml


def test_a_value_that_looks_like_an_xml_escape_is_written_to_read_back_as_is():
    # ECMA-376 Part 1, 22.9.2.19 ST_Xstring: "_x0041_" is read as "A" unless its "_" is _x005F_.
    xml = sheet_xml(xlsx.text_workbook([["a_x0041_b", "tab\there"]]))
    assert "a_x005F_x0041_b" in xml
    assert "tab\there" in xml  # a tab is allowed in XML and kept


def test_the_same_rows_give_the_same_bytes():
    rows = [["productId", "deviceId"], ["0012", "@SUM"]]
    assert xlsx.text_workbook(rows) == xlsx.text_workbook(rows)
