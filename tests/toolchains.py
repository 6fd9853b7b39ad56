"""The compilers, libraries and runtimes the device-code tests use (Debian's gcc, mbedTLS,
OpenSSL, Paho C; node with mqtt.js from npm).

Without them the tests skip and say what to install, unless PORTAL_REQUIRE_TOOLCHAINS=1 (set by
.ci/run): then a missing tool fails the test, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INCLUDE = Path("/usr/include")
# mqtt.js is installed outside the repository (never committed): .ci/run puts it here.
NODE_DIR = Path(
    os.environ.get("PORTAL_KIT_NODE_DIR") or Path.home() / ".cache" / "portal-kit-node"
)
INSTALL_HINT = (
    "apt-get install gcc make libmbedtls-dev libssl-dev libpaho-mqtt-dev nodejs npm; "
    f"npm install --prefix {NODE_DIR} mqtt@5.16.0"
)


def need(present, what: str):
    if present:
        return
    message = f"{what} is missing ({INSTALL_HINT})"
    if os.environ.get("PORTAL_REQUIRE_TOOLCHAINS") == "1":
        pytest.fail(message + "; PORTAL_REQUIRE_TOOLCHAINS=1 requires it.", pytrace=False)
    pytest.skip(message)


def need_gcc():
    need(shutil.which("gcc"), "gcc")
    return shutil.which("gcc")


def need_header(header: str, package: str):
    need_gcc()
    need((INCLUDE / header).is_file(), f"{header} (Debian package {package})")


def need_make():
    need(shutil.which("make"), "make")


def need_node() -> str:
    need(shutil.which("node"), "node")
    return shutil.which("node")


def need_mqtt_js() -> Path:
    """The node_modules folder that holds mqtt.js."""
    need_node()
    modules = NODE_DIR / "node_modules"
    need((modules / "mqtt" / "package.json").is_file(), f"mqtt.js in {modules}")
    return modules


def compile_c(source: str, directory: Path, libraries: list[str], name="program") -> Path:
    """Compile ``source`` with gcc (warnings are errors); the test fails with gcc's words."""
    source_path = directory / f"{name}.c"
    source_path.write_text(source, encoding="utf-8")
    binary = directory / name
    result = subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source_path),
         *libraries],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"gcc failed:\n{result.stderr}"
    return binary
