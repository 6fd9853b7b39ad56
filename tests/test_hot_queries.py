"""devices/hot_queries.py against the ORM querysets each function stands for, on the same rows.

``compare_with_orm`` makes its own rows and is run here on SQLite and by tests/test_postgres.py
on a real PostgreSQL, so the hand-built SQL is proved on both databases the portal supports.
"""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from devices import hot_queries


def _fields(instance):
    return {field.attname: getattr(instance, field.attname)
            for field in type(instance)._meta.concrete_fields}


def compare_with_orm():
    """Asserts that every hot query answers what its queryset answers; returns what it checked."""
    from axes.models import AccessAttempt

    from devices.models import BrokerSession, Device, Product

    checked = []
    product = Product.objects.create(product_id="hq-prod", name="产品 ‘quoted’ %_")
    other = Product.objects.create(product_id="hq-other", name="Other")
    rotated = timezone.now().replace(microsecond=123456) - timedelta(hours=3)
    plain = Device.objects.create(product=product, device_id="hq-dev_1.@", name="灯 1")
    turned = Device.objects.create(product=product, device_id="hq-dev-2", enabled=False)
    turned.rotate_secret()
    Device.objects.filter(pk=turned.pk).update(secret_rotated_at=rotated)
    Device.objects.create(product=other, device_id="hq-dev-2")  # same deviceId, other product

    for product_id, device_id in [("hq-prod", "hq-dev_1.@"), ("hq-prod", "hq-dev-2"),
                                  ("hq-other", "hq-dev-2"), ("hq-prod", "hq-dev-1.@"),
                                  ("hq-prod", "HQ-DEV-2"), ("nope", "hq-dev-2")]:
        orm = (Device.objects.filter(product__product_id=product_id, device_id=device_id)
               .only("pk", "device_secret", "enabled", "secret_rotated_at").first())
        expected = None if orm is None else (
            orm.pk, orm.device_secret, orm.enabled, orm.secret_rotated_at)
        assert hot_queries.device_record(product_id, device_id) == expected, device_id
        try:
            orm_full = Device.objects.select_related("product").get(
                product__product_id=product_id, device_id=device_id)
        except Device.DoesNotExist:
            with pytest.raises(Device.DoesNotExist):
                hot_queries.device_with_product(product_id, device_id)
        else:
            hot = hot_queries.device_with_product(product_id, device_id)
            assert _fields(hot) == _fields(orm_full)
            assert _fields(hot.product) == _fields(orm_full.product)
            assert (hot._state.adding, hot._state.db) == (False, orm_full._state.db)
        checked.append(device_id)
    assert hot_queries.device_record("hq-prod", "hq-dev-2")[3] == rotated
    from django.db.models import Q

    keys = [("hq-prod", "hq-dev_1.@"), ("hq-prod", "hq-dev-2"), ("hq-other", "hq-dev-2"),
            ("hq-prod", "HQ-DEV-2"), ("nope", "hq-dev-2"), ("hq-prod", "hq-dev-2")]
    wanted = Q()
    for product_id, device_id in keys:
        wanted |= Q(product__product_id=product_id, device_id=device_id)
    expected = {(p, d): (pk, secret, enabled, rotated_at) for pk, p, d, secret, enabled, rotated_at
                in Device.objects.filter(wanted).values_list(
                    "pk", "product__product_id", "device_id", "device_secret", "enabled",
                    "secret_rotated_at")}
    assert len(expected) == 3
    assert hot_queries.device_records(keys) == expected
    assert hot_queries.device_records([]) == {}
    assert hot_queries.device_with_product("hq-prod", "hq-dev-2").previous_secret  # decrypted

    # A loaded device saves as an UPDATE of its row, like one the ORM loaded.
    hot = hot_queries.device_with_product("hq-prod", "hq-dev_1.@")
    hot.name = "renamed"
    hot.save()
    assert Device.objects.get(pk=plain.pk).name == "renamed"
    assert Device.objects.filter(product=product).count() == 2

    now = timezone.now()
    for address, minutes in [("192.0.2.1", 1), ("192.0.2.1", 30), ("2001:db8::1", 5),
                             ("::ffff:203.0.113.5", 2)]:
        AccessAttempt.objects.create(
            ip_address=address, username="", user_agent=f"t{minutes}", path_info="/", get_data="",
            post_data="", http_accept="", failures_since_start=1,
        )
        AccessAttempt.objects.filter(ip_address=address, attempt_time__gte=now).update(
            attempt_time=now - timedelta(minutes=minutes))
    edge = now - timedelta(minutes=5)
    # Python's ipaddress writes the IPv4-mapped address as ::ffff:cb00:7105 (what client_address
    # gives behind a dual-stack proxy), Django's field as ::ffff:203.0.113.5: the same address.
    mapped = str(ipaddress.ip_address("::ffff:203.0.113.5"))
    for address in ["192.0.2.1", "2001:db8::1", "2001:DB8:0::1", "192.0.2.2", mapped, None]:
        for since in [now, now - timedelta(minutes=2), edge, now - timedelta(hours=1)]:
            orm = (AccessAttempt.objects.filter(ip_address__isnull=True) if address is None
                   else AccessAttempt.objects.filter(ip_address=address))
            expected = orm.filter(attempt_time__gte=since).exists()
            assert hot_queries.has_failures_since(address, since) is expected, (address, since)
            checked.append((address, since))
    assert hot_queries.has_failures_since("2001:db8::1", edge)  # the edge itself counts
    assert hot_queries.has_failures_since(mapped, now - timedelta(minutes=3))

    base = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    username = "hq-dev_1.@&hq-prod"
    rows = [  # (exclusive, authenticated minutes after base, connected minutes after base)
        (False, 0, 1), (True, 2, 3), (False, 4, 5), (True, 6, None), (False, 8, 5), (False, 9, 9),
    ]
    for exclusive, authenticated, connected in rows:
        BrokerSession.objects.create(
            device=plain, username=username, client_id=f"c{authenticated}", exclusive=exclusive,
            authenticated_at=base + timedelta(minutes=authenticated),
            connected_at=None if connected is None else base + timedelta(minutes=connected),
        )
    BrokerSession.objects.create(device=turned, username="hq-dev-2&hq-prod", client_id="x",
                                 connected_at=base)
    for since in [None, base + timedelta(minutes=4), base + timedelta(minutes=10)]:
        orm = BrokerSession.objects.connected().filter(username=username)
        if since is not None:
            orm = orm.filter(authenticated_at__gte=since)
        expected = [(s.pk, s.client_id, s.broker_client_id, s.username, s.exclusive)
                    for s in orm.order_by("-exclusive", "-connected_at", "-pk")]
        assert hot_queries.connected_sessions(username, since) == expected
        checked.append(since)
    assert hot_queries.connected_sessions("nobody&hq-prod") == []

    before = set(BrokerSession.objects.values_list("pk", flat=True))
    when = base + timedelta(minutes=30, microseconds=5)
    hot_queries.insert_pending_session(plain.pk, username, "c-new", "emqx-id", "192.0.2.9", True,
                                       when)
    (new,) = BrokerSession.objects.exclude(pk__in=before)
    assert (new.device_id, new.username, new.client_id, new.broker_client_id, new.peerhost,
            new.peername, new.exclusive, new.authenticated_at, new.connected_at) == (
        plain.pk, username, "c-new", "emqx-id", "192.0.2.9", "", True, when, None)

    checked += _compare_insert_copies([plain.pk, turned.pk, plain.pk])
    return checked


def _compare_insert_copies(device_pks):
    """insert_copies against bulk_create of the same rows; returns the rows it compared."""
    from django.contrib.auth import get_user_model

    from devices.models import ConnectionCheck

    user = get_user_model().objects.create(username="hq-requester")
    queued = datetime(2026, 12, 2, 4, 30, 0, 654321, tzinfo=UTC)
    shared = {"options": {"securemode": 3, "名": "值 ‘%s’"}, "requested_by": user,
              "queued_at": queued}
    pks = hot_queries.insert_copies(ConnectionCheck(**shared), "device_id", device_pks)
    orm = ConnectionCheck.objects.bulk_create(
        [ConnectionCheck(**shared, device_id=pk) for pk in device_pks])
    assert pks == sorted(pks) and len(set(pks)) == len(device_pks)  # in the order given

    def stored(pk):
        return {name: value for name, value in _fields(ConnectionCheck.objects.get(pk=pk)).items()
                if name != "id"}

    hot_rows, orm_rows = [stored(pk) for pk in pks], [stored(check.pk) for check in orm]
    assert hot_rows == orm_rows
    assert [row["device_id"] for row in hot_rows] == device_pks
    assert hot_queries.insert_copies(ConnectionCheck(**shared), "device_id", []) == []
    return hot_rows


@pytest.mark.django_db
def test_the_hot_queries_answer_what_their_querysets_answer():
    assert len(compare_with_orm()) > 20



def _device():
    from devices.models import Device, Product

    return Device.objects.create(product=Product.objects.create(product_id="fp"), device_id="d")


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_the_hot_queries_skip_djangos_cursor_and_commit_at_once(monkeypatch):
    import sqlite3

    from django.db import connection

    device = _device()
    from django.db import connections

    monkeypatch.setattr(type(connections["default"]), "cursor",
                        lambda self: pytest.fail("Django's cursor"))
    assert hot_queries.device_record("fp", "d")[0] == device.pk
    hot_queries.insert_pending_session(device.pk, "d&fp", "d", "", "127.0.0.1", False)
    monkeypatch.undo()
    # Outside a transaction the write is committed at once: another connection sees it.
    other = sqlite3.connect(connection.settings_dict["NAME"])
    try:
        rows = other.execute("SELECT username, client_id FROM devices_brokersession").fetchall()
    finally:
        other.close()
    assert rows == [("d&fp", "d")]


@pytest.mark.django_db
def test_wrapped_queries_take_djangos_path_so_that_the_wrapper_sees_them():
    from django.db import connection

    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    _device()
    with connection.execute_wrapper(wrapper):
        assert hot_queries.device_record("fp", "d") is not None
    assert len(seen) == 1 and "devices_device" in seen[0]


@pytest.mark.django_db
def test_an_error_while_fetching_rows_is_djangos_too():
    from django.db import DatabaseError, connection

    # The second row's JSON is malformed: SQLite fails while stepping to it, in the fetch.
    sql = "SELECT json(value) FROM (SELECT %s AS value UNION ALL SELECT %s)"
    with pytest.raises(DatabaseError) as raised:
        hot_queries._fetchall(connection, sql, ['{"a": 1}', "{not json"])
    assert type(raised.value).__module__ == "django.db.utils"


@pytest.mark.django_db
def test_a_hot_query_in_an_event_loop_is_refused_as_the_orms_would_be(monkeypatch):
    import asyncio

    from django.core.exceptions import SynchronousOnlyOperation

    async def in_the_loop():
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        hot_queries.device_record("fp", "d")  # this context's connection is open now
        monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE")
        return hot_queries.device_record("fp", "d")

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(in_the_loop())


@pytest.mark.django_db
def test_logged_queries_still_see_the_hot_queries(django_assert_num_queries):
    device = _device()
    with django_assert_num_queries(2) as captured:
        hot_queries.device_record("fp", "d")
        hot_queries.insert_pending_session(device.pk, "d&fp", "d", "", "127.0.0.1", False)
    assert "INSERT" in captured.captured_queries[1]["sql"]


@pytest.mark.django_db(transaction=True)
def test_a_hot_write_is_part_of_the_callers_transaction():
    from django.db import transaction

    from devices.models import BrokerSession

    device = _device()
    with pytest.raises(RuntimeError), transaction.atomic():
        hot_queries.insert_pending_session(device.pk, "d&fp", "d", "", "127.0.0.1", False)
        assert BrokerSession.objects.filter(device=device).count() == 1
        raise RuntimeError("roll back")
    assert not BrokerSession.objects.filter(device=device).exists()


@pytest.mark.django_db
def test_a_hot_query_in_a_broken_transaction_is_refused_as_the_orms_would_be():
    from django.db import IntegrityError, transaction
    from django.db.transaction import TransactionManagementError

    from devices.models import Product

    with transaction.atomic():
        Product.objects.create(product_id="same")
        with pytest.raises(IntegrityError):
            Product.objects.create(product_id="same")  # breaks the transaction (no savepoint)
        with pytest.raises(TransactionManagementError):
            hot_queries.device_record("same", "d")


@pytest.mark.django_db(transaction=True)
def test_a_locked_database_comes_as_djangos_operational_error():
    import sqlite3

    from django.db import OperationalError, connection

    device = _device()
    options = connection.settings_dict["OPTIONS"]
    saved = options["timeout"]
    options["timeout"] = 0.2
    connection.close()  # the next connection waits 0.2 s for a lock
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        # Django's class, which portal.middleware turns into a 503 with Retry-After
        with pytest.raises(OperationalError, match="locked"):
            hot_queries.insert_pending_session(device.pk, "d&fp", "d", "", "127.0.0.1", False)
    finally:
        other.execute("ROLLBACK")
        other.close()
        options["timeout"] = saved
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_insert_copies_on_sqlites_own_connection_writes_all_rows_or_none(monkeypatch):
    from django.db import IntegrityError
    from django.db.models.sql.compiler import SQLInsertCompiler

    from devices.models import ConnectionCheck

    device = _device()
    monkeypatch.setattr(SQLInsertCompiler, "execute_sql",
                        lambda *args, **kwargs: pytest.fail("the ORM's INSERT"))
    pks = hot_queries.insert_copies(ConnectionCheck(), "device_id", [device.pk, device.pk])
    # The third row names no device: the foreign key fails at the commit, and takes the first two
    # with it.
    with pytest.raises(IntegrityError):
        hot_queries.insert_copies(ConnectionCheck(), "device_id", [device.pk, device.pk, 10**9])
    monkeypatch.undo()
    assert sorted(ConnectionCheck.objects.values_list("pk", flat=True)) == pks


@pytest.mark.django_db
def test_insert_copies_with_queries_logged_takes_djangos_path(django_assert_num_queries):
    from devices.models import ConnectionCheck

    device = _device()
    with django_assert_num_queries(1):  # bulk_create's one INSERT for both rows
        pks = hot_queries.insert_copies(ConnectionCheck(), "device_id", [device.pk, device.pk])
    assert list(ConnectionCheck.objects.filter(pk__in=pks).values_list("device_id", flat=True)) \
        == [device.pk, device.pk]
