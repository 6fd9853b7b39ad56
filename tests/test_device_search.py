"""The device search (devices/search.py) finds exactly what the plain filter finds.

The expected rows come from Python over the same rows: a deviceId that starts with the query or a
name that contains it, with ASCII letters compared without case and every other character as it
is (what SQLite's LIKE does). The trigram index and its triggers are checked through FTS5 itself.
"""

import re
import string

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import search
from devices.models import Device, DeviceStatus, Product

pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the trigram index is SQLite's; elsewhere the plain filter"
)

ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

NAMES = [
    "Lab sensor", "LAB SENSOR 2", "lab-sensor", "温度传感器 一号", "温度计", "湿度传感器",
    "100% humidity", "under_score", "back\\slash", 'say "hi"', "it's", "a*b", "x:y",
    "(paren)", "AND OR NOT", "NEAR(a b)", "col:name", "^start", "{braces}", "-minus", "+plus",
    "Ärger groß", "ärger GROSS", "ÉCOLE", "école", "ǅemal", "emoji 🙂 device", "aaaa", "abcabc",
    "", "  spaced  out  ", 'three """ quotes', "sensor*", "Sensor-001 twin",
]
DEVICE_IDS = ["Sensor-001", "sensor-002", "SENSOR_003", "dev.x", "a@b", "x:y:z", "100",
              "sensorX", "ab"]
QUERIES = [
    # letters, case, spaces
    "sensor", "SENSOR", "Sens", "lab s", "lab-s", "b sen", "spaced  out", "aaa", "bca", "abcabc",
    # Chinese
    "温度", "温度传感器", "传感器 一", "度", "感器", "湿度传感器",
    # LIKE's wildcards and escape, literally
    "100%", "%", "% humidity", "_", "r_s", "e_s", "under_", "\\", "k\\s", "r%s",
    # quotes and FTS5 syntax, literally
    '"', '"hi"', 'say "', '"""', "'", "it's", "a*b", "*", "sensor*", "or*", ":", "x:y", "col:",
    "(paren)", "(", ")", "AND", "and or", "OR NOT", "NOT", "NEAR(a b)", "NEAR", "^start", "^",
    "{braces}", "-minus", "+plus", "-", "+",
    # non-ASCII case: SQLite's LIKE folds ASCII letters only
    "Ärger", "ÄRGER", "ärger", "groß", "GROSS", "école", "ÉCOLE", "École", "ǅem", "ǆem",
    "🙂", "emoji 🙂",
    # deviceId prefixes
    "SENSOR_", "sensor_0", "sensor-00", "dev.", "a@", "x:y:z", "1", "10", "100", "00",
    # nothing
    "zzz-nothing", "a", "aa", "ab",
]


def expected(devices, query):
    folded = query.translate(ASCII_LOWER)
    return {
        (d.product.product_id, d.device_id) for d in devices
        if d.device_id.translate(ASCII_LOWER).startswith(folded)
        or folded in d.name.translate(ASCII_LOWER)
    }


def found(queryset, query):
    return {(d.product.product_id, d.device_id)
            for d in search.search_devices(queryset, query).select_related("product")}


@pytest.fixture
def tricky(db):
    first = Product.objects.create(product_id="first", name="First")
    second = Product.objects.create(product_id="second", name="Second")
    devices = [Device(product=first, device_id=f"d{i:03d}", name=name, device_secret="s")
               for i, name in enumerate(NAMES)]
    devices += [Device(product=second, device_id=device_id, name="", device_secret="s")
                for device_id in DEVICE_IDS]
    Device.objects.bulk_create(devices)
    return list(Device.objects.select_related("product"))


def _used_the_index(queries):
    return any(" MATCH " in q["sql"] and "UNION ALL" in q["sql"] for q in queries)


def test_the_index_and_its_triggers_exist_after_every_migration(db):
    # A later migration that rebuilds devices_device on SQLite drops the triggers: this says so.
    assert search.index_ready(connection)


def test_a_search_finds_what_a_substring_filter_over_the_rows_finds(tricky):
    wrong = {}
    for query in QUERIES:
        want = expected(tricky, query)
        with CaptureQueriesContext(connection) as queries:
            got = found(Device.objects.all(), query)
        if got != want:
            wrong[query] = (sorted(got ^ want))
        # Three characters or more go through the trigram index (else this test proves little).
        assert _used_the_index(queries.captured_queries) == (len(query) >= 3), query
    assert not wrong
    # The inputs above do find things, and the case rules were exercised both ways.
    assert expected(tricky, "ÄRGER") == {("first", "d021")}
    assert len(expected(tricky, "sensor")) > 5


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(alphabet='sSeEnNoOrR -_%\\"*:()^ÄäÉé温度传感器🙂aAbBcC0123', min_size=1,
                     max_size=7))
def test_any_query_from_awkward_characters_finds_what_the_rows_say(tricky, query):
    assert found(Device.objects.all(), query) == expected(tricky, query)


def test_the_plain_filter_answers_the_same_past_the_candidate_limit(tricky, monkeypatch):
    monkeypatch.setattr(search, "CANDIDATE_LIMIT", 1)
    for query in QUERIES:
        with CaptureQueriesContext(connection) as queries:
            got = found(Device.objects.all(), query)
        assert got == expected(tricky, query), query
        if len(expected(tricky, query)) > 1:
            assert not _used_the_index(queries.captured_queries), query


def test_short_queries_are_answered_without_the_index(tricky):
    for query in ("a", "aa", "温度", "度", "%", "_", '"', "*", "1", "00", "ǅe", "🙂"):
        with CaptureQueriesContext(connection) as queries:
            got = found(Device.objects.all(), query)
        assert got == expected(tricky, query), query
        assert not _used_the_index(queries.captured_queries)
    assert expected(tricky, "温度") == {("first", "d003"), ("first", "d004")}


def test_without_its_triggers_the_index_is_not_trusted(tricky):
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {search.FTS_TABLE}_update")
    Device.objects.filter(name="Lab sensor").update(name="Renamed boiler")
    with CaptureQueriesContext(connection) as queries:
        assert found(Device.objects.all(), "boiler") == {("first", "d000")}
    assert not _used_the_index(queries.captured_queries)


# -- the list: filters and pages ----------------------------------------------------------------


@pytest.fixture
def kitchens(db):
    first = Product.objects.create(product_id="first", name="First")
    second = Product.objects.create(product_id="second", name="Second")
    statuses = [DeviceStatus.ONLINE, DeviceStatus.OFFLINE, DeviceStatus.INACTIVE]
    devices = [
        Device(product=first if i % 4 else second, device_id=f"dev-{(i * 37) % 140:03d}",
               name=("Kitchen" if i % 2 else "KITCHEN tap") + f" {i}", device_secret="s",
               status=statuses[i % 3], enabled=i % 5 != 0)
        for i in range(140)
    ]
    devices += [Device(product=first, device_id=f"kitchen-{i}", name="Hall", device_secret="s")
                for i in range(3)]
    Device.objects.bulk_create(devices)
    return list(Device.objects.select_related("product"))


def _listed(client, url, params):
    """Every (productId, deviceId) the list shows, page after page, in its order."""
    rows, page = [], 1
    while True:
        body = client.get(url, {**params, "page": str(page)}).content.decode()
        rows += re.findall(r'href="/products/([^/]+)/devices/([^/]+)/"', body)
        if 'rel="next"' not in body:
            return rows
        page += 1


def test_the_list_filters_and_pages_a_search_as_the_rows_say(client, owner, kitchens):
    client.force_login(owner)
    cases = [{"q": "kitchen"}, {"q": "KITCHEN"}, {"q": "kitchen 1"}, {"q": "Dev-0"},
             {"q": "kitchen", "product": "first"}, {"q": "kitchen", "status": "online"},
             {"q": "kitchen", "enabled": "no"}, {"q": "tap", "product": "second", "enabled": "yes"},
             {"q": "ki", "status": "inactive"}, {"q": "hall"}, {"q": "nothing at all"}]
    for params in cases:
        matching = expected(kitchens, params["q"])
        want = sorted(
            (d for d in kitchens if (d.product.product_id, d.device_id) in matching
             and params.get("product", d.product.product_id) == d.product.product_id
             and params.get("status", d.status) == d.status
             and {"yes": True, "no": False}.get(params.get("enabled"), d.enabled) == d.enabled),
            key=lambda d: (d.product_id, d.device_id),
        )
        got = _listed(client, "/devices/", params)
        assert got == [(d.product.product_id, d.device_id) for d in want], params
    assert len(_listed(client, "/devices/", {"q": "kitchen"})) > 100  # three pages


def test_a_product_page_searches_its_own_devices(client, owner, kitchens):
    client.force_login(owner)
    got = _listed(client, "/products/second/", {"q": "tap"})
    want = sorted(d.device_id for d in kitchens if d.product.product_id == "second"
                  and "tap" in d.name.lower())
    assert [device_id for _, device_id in got] == want and want


# -- the triggers -------------------------------------------------------------------------------


def _indexed(text):
    """Ids whose name the FTS5 table holds ``text`` in, asked of the index alone."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT rowid FROM {search.FTS_TABLE} WHERE {search.FTS_TABLE} MATCH %s",
                       [search.fts_phrase(text)])
        return {row[0] for row in cursor.fetchall()}


def _index_agrees_with_the_table():
    # FTS5's own check of an external-content index against its table (rank 1: read the table).
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {search.FTS_TABLE} ({search.FTS_TABLE}, rank) "
                       "VALUES ('integrity-check', 1)")


def test_the_triggers_keep_the_index_in_step_with_every_kind_of_write(db, product):
    boiler = Device.objects.create(product=product, device_id="b1", name="Basement boiler")
    assert _indexed("boiler") == {boiler.pk}

    boiler.name = "Attic heater"
    boiler.save()
    assert _indexed("boiler") == set() and _indexed("heater") == {boiler.pk}
    boiler.name = "Attic furnace"
    boiler.save(update_fields=["name"])
    assert _indexed("heater") == set() and _indexed("furnace") == {boiler.pk}
    boiler.enabled = False
    boiler.save(update_fields=["enabled"])  # the name is unchanged: still indexed once
    assert _indexed("furnace") == {boiler.pk}
    _index_agrees_with_the_table()

    many = Device.objects.bulk_create(
        [Device(product=product, device_id=f"m{i}", name=f"Meter {i}", device_secret="s")
         for i in range(5)])
    assert _indexed("meter") == {d.pk for d in many}
    Device.objects.filter(device_id__in=["m0", "m1"]).update(name="Pump")
    assert _indexed("meter") == {d.pk for d in many[2:]}
    assert _indexed("pump") == {many[0].pk, many[1].pk}
    many[2].name = "Valve"
    Device.objects.bulk_update([many[2]], ["name"])
    assert _indexed("valve") == {many[2].pk}
    _index_agrees_with_the_table()

    boiler.delete()
    assert _indexed("furnace") == set()
    Device.objects.filter(name="Pump").delete()
    assert _indexed("pump") == set()
    _index_agrees_with_the_table()
    assert found(Device.objects.all(), "METER") == {(product.product_id, "m3"),
                                                    (product.product_id, "m4")}


def test_a_rolled_back_rename_leaves_the_index_as_it_was(db, device):
    with pytest.raises(RuntimeError), transaction.atomic():
        Device.objects.filter(pk=device.pk).update(name="Something else")
        raise RuntimeError
    assert _indexed("lab sensor") == {device.pk} and _indexed("something") == set()
    _index_agrees_with_the_table()


@pytest.mark.django_db(transaction=True)
def test_the_migration_indexes_the_devices_already_there():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("devices")
    executor.migrate([("devices", "0007_message_trace")])
    try:
        assert not search.index_ready(connection)
        product = Product.objects.create(product_id="before", name="Before")
        old = Device.objects.create(product=product, device_id="old-1", name="Greenhouse fan")
        executor = MigrationExecutor(connection)
        executor.migrate([("devices", "0008_device_search_index")])
        assert search.index_ready(connection)
        assert _indexed("greenhouse") == {old.pk}
        _index_agrees_with_the_table()
    finally:
        MigrationExecutor(connection).migrate(latest)
