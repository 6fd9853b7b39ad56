"""The embedded broker's batch loader (broker/loader.py): cold look-ups that arrive together
share one query, never one that started before they asked; and its query finds what the
verifier's own look-up finds."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker import loader, verifier
from devices import hot_queries
from devices.models import Device, Product


@pytest.fixture(autouse=True)
def empty_cache():
    verifier.registry_cache.clear()
    yield
    verifier.registry_cache.clear()


class Registry:
    """A fetch whose every batch waits for ``release`` and answers version-numbered records."""

    def __init__(self):
        self.batches = []
        self.release = asyncio.Event()

    async def fetch(self, keys):
        self.batches.append(sorted(keys))
        version = len(self.batches)
        await self.release.wait()
        self.release.clear()
        return {key: (version, key) for key in keys if key[1] != "unknown"}


def run(coroutine):
    """asyncio.run on a thread of its own: in the whole suite Playwright's event loop already
    runs on the main thread, where asyncio.run refuses to start another."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_look_ups_that_arrive_while_a_query_runs_are_fetched_together_by_the_next():
    async def storm():
        registry = Registry()
        devices = loader.DeviceLoader(registry.fetch)
        first = asyncio.create_task(devices.load(("p", "d-0")))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the first query runs now
        others = [asyncio.create_task(devices.load(("p", f"d-{n}"))) for n in range(1, 51)]
        await asyncio.sleep(0)
        registry.release.set()
        assert await first == (1, ("p", "d-0"))
        await asyncio.sleep(0)
        registry.release.set()
        answers = await asyncio.gather(*others)
        return registry.batches, answers, devices.batches

    batches, answers, count = run(storm())
    assert batches == [[("p", "d-0")], sorted(("p", f"d-{n}") for n in range(1, 51))]
    assert answers == [(2, ("p", f"d-{n}")) for n in range(1, 51)]
    assert count == 2


def test_a_look_up_never_shares_a_query_that_started_before_it_asked():
    async def twice():
        registry = Registry()
        devices = loader.DeviceLoader(registry.fetch)
        early = asyncio.create_task(devices.load(("p", "d")))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        late = asyncio.create_task(devices.load(("p", "d")))  # the device changed meanwhile
        await asyncio.sleep(0)
        registry.release.set()
        first = await early
        await asyncio.sleep(0)
        registry.release.set()
        return first, await late

    assert run(twice()) == ((1, ("p", "d")), (2, ("p", "d")))


def test_an_unknown_device_is_none_and_a_failed_query_fails_only_its_own_waiters():
    async def failing():
        calls = []

        async def fetch(keys):
            calls.append(keys)
            if len(calls) == 1:
                raise RuntimeError("database is locked")
            return {}

        devices = loader.DeviceLoader(fetch)
        with pytest.raises(RuntimeError, match="locked"):
            await devices.load(("p", "d"))
        return await devices.load(("p", "unknown"))

    assert run(failing()) is None


@pytest.fixture
def two_products(db):
    first = Product.objects.create(product_id="p-one", name="One")
    second = Product.objects.create(product_id="p-two", name="Two")
    Device.objects.create(product=first, device_id="shared", device_secret="secret-one-0123456789")
    Device.objects.create(product=second, device_id="shared", device_secret="secret-two-0123456789",
                          enabled=False)
    Device.objects.create(product=second, device_id="other", device_secret="secret-three-012345678")
    return first, second


def test_one_query_finds_the_devices_of_several_products_as_the_verifier_does(
    two_products, settings, django_assert_num_queries
):
    settings.MQTT_AUTH_CACHE_MS = 0
    keys = [("p-one", "shared"), ("p-two", "shared"), ("p-two", "other"), ("p-one", "other"),
            ("p-three", "shared")]
    with django_assert_num_queries(1):
        found = loader.fetch_records(keys)
    expected = {key: verifier.lookup_device(*key) for key in keys}
    assert found == {key: record for key, record in expected.items() if record is not None}
    assert set(found) == {("p-one", "shared"), ("p-two", "shared"), ("p-two", "other")}
    assert found[("p-one", "shared")].secret == "secret-one-0123456789"
    assert found[("p-two", "shared")].enabled is False


def test_found_devices_enter_the_short_cache_only_when_it_is_on(two_products, settings):
    settings.MQTT_AUTH_CACHE_MS = 0
    loader.fetch_records([("p-one", "shared")])
    with pytest.raises(verifier.NotCached):
        settings.MQTT_AUTH_CACHE_MS = 1000
        verifier.lookup_device("p-one", "shared", cached_only=True)
    loader.fetch_records([("p-one", "shared"), ("p-one", "ghost")])
    assert verifier.lookup_device("p-one", "shared", cached_only=True).secret == (
        "secret-one-0123456789")
    with pytest.raises(verifier.NotCached):
        verifier.lookup_device("p-one", "ghost", cached_only=True)  # unknown: never cached


def test_more_keys_than_a_chunk_take_one_query_per_chunk(product, django_assert_num_queries):
    Device.objects.bulk_create([Device(product=product, device_id=f"d-{n}", device_secret="s" * 20)
                                for n in range(hot_queries.DEVICE_RECORDS_CHUNK + 10)])
    keys = [(product.product_id, f"d-{n}") for n in range(hot_queries.DEVICE_RECORDS_CHUNK + 10)]
    with django_assert_num_queries(2):
        assert len(loader.fetch_records(keys)) == hot_queries.DEVICE_RECORDS_CHUNK + 10


def test_a_loader_cancelled_during_its_query_leaves_no_look_up_waiting():
    """When the broker stops while a batch is being fetched, its waiters end (cancelled) rather
    than wait for ever."""
    async def stop_mid_query():
        registry = Registry()
        devices = loader.DeviceLoader(registry.fetch)
        during = asyncio.create_task(devices.load(("p", "d-0")))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the query runs now, and never returns
        after = asyncio.create_task(devices.load(("p", "d-1")))  # waits for the next batch
        await asyncio.sleep(0)
        devices._task.cancel()
        outcomes = []
        for look_up in (during, after):
            try:
                await asyncio.wait_for(look_up, timeout=2)
            except asyncio.CancelledError:
                outcomes.append("cancelled")
            except TimeoutError:
                outcomes.append("still waiting")
        return outcomes

    assert run(stop_mid_query()) == ["cancelled", "cancelled"]
