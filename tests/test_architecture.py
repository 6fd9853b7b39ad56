"""The import layers of pyproject.toml's import-linter contracts: they hold on the tree, and each
one breaks when a wrong import is planted in a copy of the tree (so a contract cannot pass by
checking nothing). Then the test lanes of tests/conftest.py."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.lanes import lanes_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["portal", "devices", "broker", "console"]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS = "console and broker sit above devices, and neither imports the other"
PURE_SIGNING = "devices.signing is pure Python: no Django, nothing of the project"


def lint_imports(cwd):
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def tree_copy(tmp_path):
    """The project's packages and pyproject.toml, copied, to plant bad imports in."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_say_what_the_architecture_says():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {contract["name"]: contract for contract in config["contracts"]}
    assert set(config["root_packages"]) == set(PACKAGES)
    assert contracts[LAYERS]["type"] == "layers"
    assert contracts[LAYERS]["layers"] == ["console | broker", "devices"]
    assert contracts[PURE_SIGNING]["type"] == "forbidden"
    assert contracts[PURE_SIGNING]["source_modules"] == ["devices.signing"]
    assert set(contracts[PURE_SIGNING]["forbidden_modules"]) == {"django", *PACKAGES}


@pytest.mark.broker  # lint-imports in a fresh interpreter: out of the quick lane
def test_the_tree_keeps_every_contract():
    code, output = lint_imports(ROOT)
    assert code == 0, output
    assert f"{LAYERS} KEPT" in output
    assert f"{PURE_SIGNING} KEPT" in output
    assert " 0 broken" in output


@pytest.mark.broker  # lint-imports in a fresh interpreter: out of the quick lane
@pytest.mark.parametrize(
    ("plants", "broken"),
    [
        ({"devices/planted.py": "from console import views"}, LAYERS),
        ({"devices/planted.py": "from broker import verifier"}, LAYERS),
        ({"devices/management/commands/planted.py": "import broker.embedded"}, LAYERS),
        ({"console/planted.py": "from broker import verifier"}, LAYERS),
        ({"broker/planted.py": "from console import views"}, LAYERS),
        # An indirect chain counts too: devices -> portal -> console.
        ({"portal/planted.py": "import console.views", "devices/planted.py": "import portal.planted"},
         LAYERS),
        ({"devices/signing.py": "import django.conf"}, PURE_SIGNING),
        ({"devices/signing.py": "from devices import fields"}, PURE_SIGNING),
    ],
    ids=["devices-console", "devices-broker", "command-broker", "console-broker", "broker-console",
         "devices-portal-console", "signing-django", "signing-devices"],
)
def test_a_planted_bad_import_breaks_its_contract(tree_copy, plants, broken):
    for module, line in plants.items():
        path = tree_copy / module
        text = path.read_text() if path.exists() else ""
        path.write_text(text + f"\n{line}  # planted by the test\n")
    code, output = lint_imports(tree_copy)
    assert code != 0, output
    assert f"{broken} BROKEN" in output
    importer = next(iter(reversed(plants))).replace("/", ".").removesuffix(".py")
    assert importer in output


@pytest.mark.broker  # lint-imports in a fresh interpreter: out of the quick lane
def test_portal_may_import_any_app(tree_copy):
    (tree_copy / "portal" / "planted.py").write_text(
        "import broker.verifier\nimport console.views\nimport devices.models\n"
    )
    code, output = lint_imports(tree_copy)
    assert code == 0, output


# --- the test lanes (tests/conftest.py) --------------------------------------------------------


def test_every_selected_test_that_uses_a_broker_worker_server_or_browser_carries_its_mark(request):
    unmarked = [
        f"{item.nodeid} (needs {lane})"
        for item in request.session.items
        for lane in lanes_of(item)
        if item.get_closest_marker(lane) is None
    ]
    assert unmarked == []
    # And `-m "not broker and not browser"` (make test-fast) really leaves them all out.
    excluded = {lane for lane in ("broker", "browser")
                if f"not {lane}" in (request.config.getoption("markexpr") or "")}
    selected = [item.nodeid for item in request.session.items if lanes_of(item) & excluded]
    assert selected == []


@pytest.mark.parametrize(
    ("fixtures", "lanes"),
    [
        (["mqtt_broker", "_mqtt_broker_process", "transactional_db"], {"broker"}),
        (["caching_broker", "_mqtt_broker_process"], {"broker"}),
        (["start_worker", "settings"], {"broker"}),
        (["live_server", "transactional_db"], {"broker"}),
        (["page", "context", "browser", "live_server"], {"browser"}),
        (["page", "context", "browser", "live_server", "start_worker"], {"browser", "broker"}),
        (["client", "owner", "db"], set()),
    ],
)
def test_the_lanes_follow_the_fixtures_a_test_uses(fixtures, lanes):
    assert lanes_of(SimpleNamespace(fixturenames=fixtures)) == lanes


def test_a_test_outside_the_broker_lane_cannot_start_a_broker_or_a_worker():
    for command in (
        [sys.executable, str(ROOT / "manage.py"), "runbroker", "--port", "1"],
        [sys.executable, "manage.py", "db_worker"],
        f"{sys.executable} manage.py runportal",
    ):
        with pytest.raises(pytest.fail.Exception, match="mark it @pytest.mark.broker"):
            subprocess.Popen(command, cwd=ROOT)
