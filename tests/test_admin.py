"""The admin, through HTTP: batch registration, masked and revealed secrets, exports, actions."""

import csv
import io
import time

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import ApiToken, AuditEvent, Device, Product, RegistrationBatch

pytestmark = pytest.mark.django_db

BATCH_URL = "/admin/devices/device/batch/"
CHANGELIST_URL = "/admin/devices/device/"


def generate(client, product, **fields):
    data = {
        "generate-product": product.pk,
        "generate-prefix": "dev-",
        "generate-start": 1,
        "generate-count": 5,
        "generate-width": 5,
        "generate-name_prefix": "",
    }
    data.update({f"generate-{key}": value for key, value in fields.items()})
    return client.post(BATCH_URL, data)


def upload(client, product, content: bytes, **headers):
    return client.post(
        BATCH_URL,
        {
            "upload-product": product.pk,
            "upload-file": SimpleUploadedFile("devices.csv", content, "text/csv"),
        },
        **headers,
    )


def raw_secret(pk):
    with connection.cursor() as cursor:
        cursor.execute("SELECT device_secret FROM devices_device WHERE id = %s", [pk])
        return cursor.fetchone()[0]


# -- batch registration ----------------------------------------------------------------------------


def test_the_batch_page_offers_both_ways(owner_client, product):
    response = owner_client.get(BATCH_URL + f"?product={product.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="generate-prefix"' in html
    assert 'name="upload-file"' in html
    assert f'<option value="{product.pk}" selected>' in html


def test_an_admin_batch_of_10000_devices_is_created_quickly(owner_client, product):
    started = time.perf_counter()
    response = generate(owner_client, product, prefix="factory-", count=10_000, width=5)
    elapsed = time.perf_counter() - started
    print(f"\nadmin batch of 10,000 devices: {elapsed:.2f} s")
    assert response.status_code == 302
    batch = RegistrationBatch.objects.get()
    assert response["Location"] == f"/admin/devices/device/batch/{batch.pk}/"
    assert batch.device_count == 10_000
    assert Device.objects.filter(product=product, batch=batch).count() == 10_000
    assert set(
        Device.objects.filter(device_id__in=["factory-00001", "factory-10000"]).values_list(
            "device_id", flat=True
        )
    ) == {"factory-00001", "factory-10000"}
    last = Device.objects.get(device_id="factory-10000")
    assert len(last.device_secret) == 32
    assert (
        Fernet(settings.SECRETS_KEYS[0])
        .decrypt(raw_secret(last.pk).removeprefix("fernet:").encode())
        .decode()
        == last.device_secret
    )
    assert elapsed < 30, f"10,000 devices took {elapsed:.1f} s"

    result = owner_client.get(response["Location"])
    assert "10000 devices of product a1B2c3D4e5F (registered" in result.content.decode()


def test_a_generated_batch_with_one_colliding_row_creates_nothing(owner_client, product):
    Device.objects.create(product=product, device_id="dev-00003")
    response = generate(owner_client, product, count=5)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nothing was registered." in html
    assert "Row 3: product a1B2c3D4e5F already has a device &#x27;dev-00003&#x27;." in html
    assert Device.objects.count() == 1
    assert RegistrationBatch.objects.count() == 0


def test_a_csv_with_one_bad_row_creates_nothing_and_names_the_row(owner_client, product):
    content = b"deviceId,name\ngood-1,One\ngood-2,Two\nbad id,Three\ngood-4,Four\n"
    response = upload(owner_client, product, content)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Row 4: deviceId &#x27;bad id&#x27; is not allowed: use 1 to 64 characters" in html
    assert Device.objects.count() == 0
    assert RegistrationBatch.objects.count() == 0
    chinese = upload(owner_client, product, content, HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert "第 4 行：deviceId &#x27;bad id&#x27; 不符合规则" in chinese and "must be" not in chinese


def test_a_csv_with_bom_and_names_is_registered(owner_client, product):
    content = "\ufeffdeviceId,name\r\nthermo-1,Kitchen 厨房\r\nthermo-2,\r\nthermo-3\r\n".encode()
    response = upload(owner_client, product, content)
    assert response.status_code == 302
    names = dict(Device.objects.filter(product=product).values_list("device_id", "name"))
    assert names == {"thermo-1": "Kitchen 厨房", "thermo-2": "", "thermo-3": ""}
    assert RegistrationBatch.objects.get().source == "csv"


def test_a_csv_duplicate_row_names_both_rows(owner_client, product):
    response = upload(owner_client, product, b"a\nb\na\n")
    assert "Row 3: deviceId &#x27;a&#x27; is already in row 1 of this batch." in (
        response.content.decode()
    )
    assert Device.objects.count() == 0


def test_a_count_over_10000_is_a_form_error_not_a_500(owner_client, product):
    response = generate(owner_client, product, count=10_001)
    assert response.status_code == 200
    assert "less than or equal to 10000" in response.content.decode()
    assert Device.objects.count() == 0


def test_staff_without_add_permission_cannot_register(client, django_user_model, product):
    user = django_user_model.objects.create_user("dave", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_device"))
    client.force_login(user)
    assert client.get(BATCH_URL).status_code == 403
    assert generate(client, product).status_code == 403
    assert Device.objects.count() == 0


# -- the batch's credentials -----------------------------------------------------------------------


def test_the_batch_credentials_download_holds_every_device_and_is_audited(
    owner_client, owner, product
):
    generate(owner_client, product, prefix="fac-", count=3, width=2)
    batch = RegistrationBatch.objects.get()
    response = owner_client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    assert "no-store" in response["Cache-Control"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    devices = {d.device_id: d.device_secret for d in Device.objects.filter(batch=batch)}
    assert rows[0] == ["productId", "deviceId", "deviceSecret"]
    assert rows[1:] == [
        ["a1B2c3D4e5F", device_id, devices[device_id]]
        for device_id in ("fac-01", "fac-02", "fac-03")
    ]
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT_CREDENTIALS)
    assert event.actor == owner
    assert event.actor_name == "alice"
    assert event.device_count == 3
    assert event.targets == ["a1B2c3D4e5F/fac-01", "a1B2c3D4e5F/fac-02", "a1B2c3D4e5F/fac-03"]


def test_the_batch_credentials_need_the_secret_permission(client, staff_without_secrets, product):
    client.force_login(staff_without_secrets)
    response = generate(client, product, count=2)
    assert response.status_code == 302  # may register...
    batch = RegistrationBatch.objects.get()
    page = client.get(f"/admin/devices/device/batch/{batch.pk}/")
    assert page.status_code == 200
    assert "credentials.csv" not in page.content.decode()
    response = client.post(f"/admin/devices/device/batch/{batch.pk}/credentials.csv")
    assert response.status_code == 403  # ...but not download the secrets
    assert not AuditEvent.objects.exists()


def test_a_get_of_the_credentials_url_downloads_nothing(owner_client, product):
    generate(owner_client, product, count=1)
    batch = RegistrationBatch.objects.get()
    response = owner_client.get(f"/admin/devices/device/batch/{batch.pk}/credentials.csv")
    assert response.status_code == 302
    assert not AuditEvent.objects.exists()


def test_the_batch_list_links_to_its_credentials(owner_client, product):
    generate(owner_client, product, count=1)
    batch = RegistrationBatch.objects.get()
    html = owner_client.get("/admin/devices/registrationbatch/").content.decode()
    assert f'href="/admin/devices/device/batch/{batch.pk}/"' in html
    assert (
        owner_client.get(f"/admin/devices/registrationbatch/{batch.pk}/delete/").status_code == 403
    )


def test_the_batch_list_reads_in_chinese(owner_client, product):
    generate(owner_client, product, count=1)
    batch = RegistrationBatch.objects.get()
    zh = {"HTTP_ACCEPT_LANGUAGE": "zh-CN"}
    listing = owner_client.get("/admin/devices/registrationbatch/", **zh).content.decode()
    assert "来源" in listing and "按前缀生成" in listing and "注册人" in listing
    assert ">generated<" not in listing and "Created by" not in listing
    detail = owner_client.get(
        f"/admin/devices/registrationbatch/{batch.pk}/change/", **zh).content.decode()
    assert "按前缀生成" in detail and "Device count" not in detail
    tokens = owner_client.get("/admin/devices/apitoken/add/", **zh).content.decode()
    assert "用户" in tokens and ">User:<" not in tokens


def test_the_export_action_downloads_the_selected_devices_and_is_audited(
    owner_client, product, device
):
    other = Device.objects.create(product=product, device_id="sensor-002")
    Device.objects.create(product=product, device_id="not-selected")
    response = owner_client.post(
        CHANGELIST_URL,
        {"action": "export_credentials", "_selected_action": [device.pk, other.pk]},
    )
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        ["productId", "deviceId", "deviceSecret"],
        ["a1B2c3D4e5F", "sensor-001", "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"],
        ["a1B2c3D4e5F", "sensor-002", other.device_secret],
    ]
    event = AuditEvent.objects.get()
    assert event.action == AuditEvent.Action.EXPORT_CREDENTIALS
    assert event.targets == ["a1B2c3D4e5F/sensor-001", "a1B2c3D4e5F/sensor-002"]


def test_the_export_action_is_not_offered_without_the_permission(
    client, staff_without_secrets, device
):
    client.force_login(staff_without_secrets)
    page = client.get(CHANGELIST_URL).content.decode()
    assert 'value="export_credentials"' not in page
    assert 'value="disable_devices"' in page
    response = client.post(
        CHANGELIST_URL, {"action": "export_credentials", "_selected_action": [device.pk]}
    )
    assert device.device_secret not in response.content.decode()
    assert not AuditEvent.objects.exists()


# -- one device: masked, revealed, rotated ---------------------------------------------------------


def test_the_change_page_never_holds_the_secret(owner_client, device):
    response = owner_client.get(f"/admin/devices/device/{device.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert device.device_secret not in html
    assert 'name="device_secret"' not in html
    assert "gH0" in html  # the masked form shows the last four characters
    assert f"/admin/devices/device/{device.pk}/secret/" in html


def test_saving_the_change_form_keeps_the_secret(owner_client, device):
    response = owner_client.post(
        f"/admin/devices/device/{device.pk}/change/",
        {"name": "Renamed", "enabled": "on"},
    )
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.name == "Renamed"
    assert device.device_secret == "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"


def test_reveal_is_a_post_and_is_audited(owner_client, owner, device):
    url = f"/admin/devices/device/{device.pk}/secret/"
    page = owner_client.get(url)
    assert page.status_code == 200
    assert device.device_secret not in page.content.decode()
    assert not AuditEvent.objects.exists()

    response = owner_client.post(url)
    assert response.status_code == 200
    assert device.device_secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    event = AuditEvent.objects.get()
    assert event.action == AuditEvent.Action.REVEAL_SECRET
    assert event.actor == owner
    assert event.targets == ["a1B2c3D4e5F/sensor-001"]


def test_reveal_needs_the_secret_permission(client, staff_without_secrets, device):
    client.force_login(staff_without_secrets)
    url = f"/admin/devices/device/{device.pk}/secret/"
    assert client.post(url).status_code == 403
    assert client.get(url).status_code == 403
    change_page = client.get(f"/admin/devices/device/{device.pk}/change/").content.decode()
    assert url not in change_page
    assert "gH0" not in change_page and "••••••••" in change_page  # masked without a tail
    assert not AuditEvent.objects.exists()


def test_rotate_gives_a_new_secret_and_is_audited(owner_client, owner, device):
    url = f"/admin/devices/device/{device.pk}/rotate-secret/"
    assert owner_client.get(url).status_code == 200
    device.refresh_from_db()
    assert device.device_secret == "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"  # a GET changes nothing

    response = owner_client.post(url)
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.device_secret != "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"
    assert len(device.device_secret) == 32
    event = AuditEvent.objects.get()
    assert event.action == AuditEvent.Action.ROTATE_SECRET
    assert event.actor == owner


def test_adding_one_device_generates_its_secret(owner_client, product):
    response = owner_client.get("/admin/devices/device/add/")
    assert 'name="device_secret"' in response.content.decode()
    response = owner_client.post(
        "/admin/devices/device/add/",
        {
            "product": product.pk,
            "device_id": "one-off",
            "name": "",
            "device_secret": "",
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    device = Device.objects.get(device_id="one-off")
    assert len(device.device_secret) == 32 and device.device_secret.isalnum()
    assert raw_secret(device.pk).startswith("fernet:")


def test_a_given_secret_is_hidden_from_error_reports(owner_client, product):
    from django.views.debug import SafeExceptionReporterFilter

    response = owner_client.post("/admin/devices/device/add/", {
        "product": product.pk, "device_id": "bad id", "device_secret": "given-secret-123",
        "enabled": "on"})
    assert response.status_code == 200  # the bad deviceId is refused, the form shown again
    reported = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert reported["device_id"] == "bad id" and "given-secret" not in reported["device_secret"]


def test_adding_one_device_keeps_a_given_secret(owner_client, product):
    owner_client.post(
        "/admin/devices/device/add/",
        {
            "product": product.pk,
            "device_id": "given",
            "device_secret": "factory-secret-1",
            "enabled": "on",
        },
    )
    assert Device.objects.get(device_id="given").device_secret == "factory-secret-1"


def test_adding_a_device_with_a_bad_id_says_what_is_allowed(owner_client, product):
    response = owner_client.post(
        "/admin/devices/device/add/",
        {"product": product.pk, "device_id": "has space", "device_secret": "", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "letters, digits and - _ . : @" in response.content.decode()
    assert not Device.objects.exists()


# -- lists and actions -----------------------------------------------------------------------------


def test_disable_and_enable_actions_update_the_devices_and_their_updated_time(
    owner_client, product, device
):
    other = Device.objects.create(product=product, device_id="sensor-002")
    untouched = Device.objects.create(product=product, device_id="sensor-003")
    before = Device.objects.get(pk=device.pk).updated_at

    response = owner_client.post(
        CHANGELIST_URL, {"action": "disable_devices", "_selected_action": [device.pk, other.pk]}
    )
    assert response.status_code == 302
    assert dict(Device.objects.values_list("device_id", "enabled")) == {
        "sensor-001": False,
        "sensor-002": False,
        "sensor-003": True,
    }
    assert Device.objects.get(pk=device.pk).updated_at > before
    assert Device.objects.get(pk=untouched.pk).updated_at == untouched.updated_at

    owner_client.post(CHANGELIST_URL, {"action": "enable_devices", "_selected_action": [device.pk]})
    assert Device.objects.get(pk=device.pk).enabled is True
    assert Device.objects.get(pk=other.pk).enabled is False


def test_the_device_list_searches_and_filters(owner_client, product, device):
    Device.objects.create(product=product, device_id="pump-7", name="Cellar pump", enabled=False)
    html = owner_client.get(CHANGELIST_URL + "?q=cellar").content.decode()
    assert "pump-7" in html and "sensor-001" not in html
    html = owner_client.get(CHANGELIST_URL + "?enabled__exact=1").content.decode()
    assert "sensor-001" in html and "pump-7" not in html
    html = owner_client.get(
        CHANGELIST_URL + "?status__exact=inactive&q=a1B2c3D4e5F"
    ).content.decode()
    assert "sensor-001" in html and "pump-7" in html
    assert device.device_secret not in html


def test_the_product_list_counts_devices_per_status_in_one_query(owner_client, product, device):
    Device.objects.create(product=product, device_id="on-1", status="online")
    Device.objects.create(product=product, device_id="on-2", status="online")
    Device.objects.create(product=product, device_id="off-1", status="offline")
    with CaptureQueriesContext(connection) as one_product:
        html = owner_client.get("/admin/devices/product/").content.decode()
    for column, count in [("device", 4), ("online", 2), ("offline", 1), ("inactive", 1)]:
        assert f'<td class="field-{column}_total">{count}</td>' in html

    for n in range(5):
        Product.objects.create(product_id=f"more-{n}", name="More")
    with CaptureQueriesContext(connection) as six_products:
        owner_client.get("/admin/devices/product/")
    assert len(six_products) == len(one_product)  # no query per product


# -- audit and tokens ------------------------------------------------------------------------------


def test_the_audit_log_is_listed_and_read_only(owner_client, owner, device):
    device.rotate_secret(actor=owner)
    event = AuditEvent.objects.get()
    html = owner_client.get("/admin/devices/auditevent/").content.decode()
    assert "alice" in html and "a1B2c3D4e5F/sensor-001" in html
    assert owner_client.get("/admin/devices/auditevent/add/").status_code == 403
    assert owner_client.get(f"/admin/devices/auditevent/{event.pk}/delete/").status_code == 403
    owner_client.post(f"/admin/devices/auditevent/{event.pk}/change/", {"detail": "edited"})
    event.refresh_from_db()
    assert event.detail == ""


def test_a_token_made_in_the_admin_is_shown_once_and_stored_hashed(owner_client, owner):
    response = owner_client.post(
        "/admin/devices/apitoken/add/", {"user": owner.pk, "name": "factory"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    token = html.split('<code class="api-token">')[1].split("</code>")[0]
    assert token.startswith("dpt_")
    record = ApiToken.objects.get()
    assert record.name == "factory"
    assert record.token_hash == ApiToken.hash_token(token)
    assert token not in str(list(ApiToken.objects.values_list()))
    assert ApiToken.authenticate(token) == owner
    change_page = owner_client.get(f"/admin/devices/apitoken/{record.pk}/change/").content.decode()
    assert token not in change_page


def test_every_admin_page_of_the_registry_renders(owner_client, owner, product, device):
    device.rotate_secret(actor=owner)
    ApiToken.issue(owner, "script")
    generate(owner_client, product, count=2)
    pages = [
        "/admin/",
        "/admin/devices/product/",
        "/admin/devices/product/add/",
        f"/admin/devices/product/{product.pk}/change/",
        "/admin/devices/device/",
        "/admin/devices/device/add/",
        f"/admin/devices/registrationbatch/{RegistrationBatch.objects.get().pk}/change/",
        f"/admin/devices/auditevent/{AuditEvent.objects.get().pk}/change/",
        "/admin/devices/apitoken/",
        "/admin/devices/apitoken/add/",
        f"/admin/devices/apitoken/{ApiToken.objects.get().pk}/change/",
    ]
    for url in pages:
        response = owner_client.get(url)
        assert response.status_code == 200, url
        assert device.device_secret not in response.content.decode(), url


def test_staff_who_are_not_superusers_make_tokens_only_for_themselves(client, owner, member):
    client.force_login(owner)  # staff with every devices permission, not a superuser
    response = client.post("/admin/devices/apitoken/add/", {"user": member.pk, "name": "x"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()
    ApiToken.issue(member, "token-of-bob")
    ApiToken.issue(owner, "token-of-alice")
    listing = client.get("/admin/devices/apitoken/").content.decode()
    assert "token-of-alice" in listing
    assert "token-of-bob" not in listing
