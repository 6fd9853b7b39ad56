"""Every shared fixture, and the two test lanes.

People: ``owner`` (alice, may see secrets), ``member`` (bob, sees devices, not secrets),
``staff_without_secrets`` (carol), ``outsider`` (dave, no permission at all).
Registry: ``product`` and ``device``; ``doc_device``, the spec's worked example (pk / device /
secret, the one the signing vectors use).
Real processes: ``mqtt_broker`` (the embedded broker, one per session), ``start_worker`` (db_worker
subprocesses), ``silent_server`` (a TCP server that never answers).

Lanes: a test that uses a broker, a worker, a live server or a browser (directly or through
another fixture) is marked ``broker`` / ``browser`` here, by the fixtures it uses; a module that
starts such a process by itself says ``pytestmark = pytest.mark.broker``, and a test that starts one
without the mark fails (``guard_lanes``). ``make test-fast`` runs ``-m "not broker and not browser"``.
"""

import json
import subprocess
from pathlib import Path

import pytest

# Rewrite the asserts of the shared helpers (imported by several test modules); this must
# happen before anything imports them, so here rather than in a test module.
pytest.register_assert_rewrite("tests.broker_fixtures", "tests.fake_servers")

from django.contrib.auth.models import Permission  # noqa: E402

from tests.broker_fixtures import (  # noqa: E402
    DB_TASKS,
    BrokerProcess,
    WorkerProcess,
    free_port,
    worker_env,
)
from tests.fake_servers import SilentServer  # noqa: E402
from tests.lanes import lanes_of, server_program  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def default_language():
    """A request in Chinese leaves Chinese active in the test thread (LocaleMiddleware never
    deactivates it); start and end every test in the default language so none depends on order."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(scope="session")
def vectors():
    return json.loads((DATA / "signing.json").read_text())


@pytest.fixture
def owner(django_user_model):
    user = django_user_model.objects.create_user("alice", password="alice-password", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_device_secret"),
        *Permission.objects.filter(content_type__app_label="devices"),
    )
    return django_user_model.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def owner_client(client, owner):
    """The test client, logged in as the owner."""
    client.force_login(owner)
    return client


@pytest.fixture
def member(django_user_model):
    """Logged-in user who may see devices but not their secrets."""
    user = django_user_model.objects.create_user("bob", password="bob-password")
    user.user_permissions.add(Permission.objects.get(codename="view_device"))
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def staff_without_secrets(django_user_model):
    """Staff who may manage devices but not see their secrets."""
    user = django_user_model.objects.create_user("carol", password="carol-password", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="devices").exclude(
            codename="view_device_secret"
        )
    )
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def outsider(django_user_model):
    """Logged-in user with no permission at all."""
    return django_user_model.objects.create_user("dave", password="dave-password")


@pytest.fixture
def product(db):
    from devices.models import Product

    return Product.objects.create(product_id="a1B2c3D4e5F", name="Thermometer")


@pytest.fixture
def device(product):
    from devices.models import Device

    return Device.objects.create(
        product=product,
        device_id="sensor-001",
        name="Lab sensor",
        device_secret="Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0",
    )


@pytest.fixture
def doc_device(db):
    """The spec's worked example: product pk, device device, secret secret."""
    from devices.models import Device, Product

    product = Product.objects.create(product_id="pk", name="Document example")
    return Device.objects.create(product=product, device_id="device", device_secret="secret")


# --- real processes (tests/broker_fixtures.py) -------------------------------------------------


@pytest.fixture(scope="session")
def _mqtt_broker_process(django_db_setup, django_db_blocker):
    import tempfile

    from django.conf import settings
    from django.db import connection

    from devices import tls

    if connection.vendor != "sqlite":
        pytest.skip("the broker fixture shares the test database as a SQLite file")
    files = tls.ensure_development_certificates(Path(settings.DATA_DIR) / "tls")
    log_dir = Path(tempfile.mkdtemp(prefix="broker-log-"))
    broker = BrokerProcess(
        host="127.0.0.1",
        port=free_port(),
        tls_port=free_port(),
        ca_file=str(files.ca_file),
        certfile=str(files.certfile),
        keyfile=str(files.keyfile),
        database_name=connection.settings_dict["NAME"],
        log_path=log_dir / "broker.log",
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_broker(_mqtt_broker_process, transactional_db):
    """The running broker (restarted first if an earlier test left it stopped)."""
    if not _mqtt_broker_process.running:
        _mqtt_broker_process.start()
    yield _mqtt_broker_process
    if not _mqtt_broker_process.running:
        _mqtt_broker_process.start()


@pytest.fixture
def start_worker(settings):
    """Start db_worker processes (stopped after the test); the test process enqueues to the
    database too."""
    settings.TASKS = DB_TASKS
    workers = []

    def start(broker=None, **overrides):
        if broker is not None:
            settings.MQTT_HOST, settings.MQTT_PORT = broker.host, broker.port
            settings.MQTT_TLS_PORT, settings.MQTT_CA_FILE = broker.tls_port, broker.ca_file
        worker = WorkerProcess(worker_env(broker, **overrides))
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts and never answers (a thread of this process)."""
    server = SilentServer()
    yield server
    server.close()


# --- the lanes ---------------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config, items):
    for item in items:
        for lane in lanes_of(item):
            if item.get_closest_marker(lane) is None:
                item.add_marker(getattr(pytest.mark, lane))


@pytest.fixture(autouse=True)
def guard_lanes(request, monkeypatch):
    """A test outside the broker lane that starts a broker, a worker or a server fails, naming
    the mark it needs (so the quick lane stays quick and needs no services)."""
    if request.node.get_closest_marker("broker") or request.node.get_closest_marker("browser"):
        yield
        return
    original = subprocess.Popen.__init__

    def guarded(self, args, *more, **kwargs):
        started = server_program(args)
        if started:
            pytest.fail(f"{request.node.nodeid} starts {started}: mark it "
                        "@pytest.mark.broker (or pytestmark = pytest.mark.broker in its module)",
                        pytrace=False)
        original(self, args, *more, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield
