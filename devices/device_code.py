"""Device-side code: the signing functions and connect examples firmware developers start from.

The sources are fixed files in ``device_templates/`` (never user-editable); the device's values
go into them only through ``@@NAME@@`` markers, each replaced by a literal quoted for the file's
language (``c_string``, ``js_string``, ``py_string``). The signing functions themselves take no
values: they are the same text in every kit, so the one compiled and run in the tests is the one a
device gets (the Arduino and ESP-IDF examples hold the mbedTLS function verbatim).

The values come from ``Device.connection_params`` (the JSON endpoint's answer): nothing here
computes a password.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "device_templates"

SIGNING_FILES = {
    "mbedtls": "mqtt_sign_mbedtls.c",
    "openssl": "mqtt_sign_openssl.c",
    "node": "mqtt_sign.js",
    "micropython": "mqtt_sign.py",
}

# The CONNECT sizes that libraries still in the field cannot take (issue 12).
PUBSUBCLIENT_BUFFER = 256  # Arduino PubSubClient's default MQTT_MAX_PACKET_SIZE
OLD_LIBRARY_BUFFER = 128  # older embedded clients (and PubSubClient before 2.8)

_MARKER = re.compile(r"@@([A-Z_]+)@@")


def template_text(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def signing_source(language: str) -> str:
    """The signing function for ``language`` (a key of SIGNING_FILES), exactly as shipped."""
    return template_text(SIGNING_FILES[language])


# --- Quoting: one helper per language, for any text (the secret may be any printable text). ---

_C_SIMPLE = {'"': '\\"', "\\": "\\\\", "?": "\\?", "\n": "\\n", "\t": "\\t"}


def c_string(value: str) -> str:
    """A C string literal holding ``value``'s UTF-8 bytes. Anything outside printable ASCII is a
    three-digit octal escape (an octal escape stops after three digits; a hex one would swallow
    the digits after it); ``?`` is escaped against trigraphs."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char in _C_SIMPLE:
            out.append(_C_SIMPLE[char])
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_string_lines(text: str, indent: str = "    ") -> str:
    """A multi-line text (a PEM certificate) as adjacent C literals, one per line."""
    lines = text.splitlines(keepends=True) or [""]
    return ("\n" + indent).join(c_string(line) for line in lines)


def js_string(value: str) -> str:
    """A JavaScript string literal: JSON with every non-ASCII character escaped (so U+2028 and
    U+2029, which ended string literals before ES2019, are never raw)."""
    return json.dumps(value, ensure_ascii=True)


def py_string(value: str) -> str:
    """A Python (and MicroPython) string literal, ASCII only."""
    return ascii(str(value))


def fill(template: str, values: dict[str, str]) -> str:
    """Replace each ``@@NAME@@`` by ``values[NAME]`` (already quoted); a marker without a value
    is a bug in the kit, so it raises rather than ship a broken file."""

    def replace(match):
        return values[match.group(1)]

    return _MARKER.sub(replace, template)


# --- What the examples need from the parameters. ---

def publish_topic(params: dict) -> str:
    """A topic inside the device's own space (spec §4)."""
    return f"/{params['productId']}/{params['deviceId']}/user/update"


def _uri(scheme: str, host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}:{port}"


def connect_packet_size(params: dict) -> int:
    """Bytes of the MQTT 3.1.1 CONNECT these parameters make (clean session, username and
    password, no will): fixed header (1 byte + the remaining length's 1-4 bytes), variable header
    10 bytes (protocol name "MQTT" with its 2-byte length, level, flags, keep-alive), then
    clientId, username and password, each with a 2-byte length. Keep-alive changes no size."""
    remaining = 10 + sum(
        2 + len(params[key].encode("utf-8"))
        for key in ("mqttClientId", "mqttUsername", "mqttPassword")
    )
    length_bytes = 1
    while remaining >= 128 ** length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


def size_warnings(size: int) -> list[int]:
    """The buffer limits (bytes) that a CONNECT of ``size`` bytes exceeds, largest first."""
    return [limit for limit in (PUBSUBCLIENT_BUFFER, OLD_LIBRARY_BUFFER) if size > limit]


def _values(params: dict, device_secret: str, quote, *, true: str, false: str) -> dict:
    tls = params["securemode"] == 2
    return {
        "PRODUCT_ID": quote(params["productId"]),
        "DEVICE_ID": quote(params["deviceId"]),
        "DEVICE_SECRET": quote(device_secret),
        "CLIENT_ID": quote(params["clientId"]),
        "SIGNMETHOD": quote(params["signmethod"]),
        "SECUREMODE": str(int(params["securemode"])),
        "USE_TIMESTAMP": true if params["timestamp"] is not None else false,
        "EXCLUSIVE": true if params["exclusive"] else false,
        "HOST": quote(params["host"]),
        "PORT": str(int(params["port"])),
        "TOPIC": quote(publish_topic(params)),
        "TLS": true if tls else false,
    }


def _c_values(params, device_secret, ca_pem, uri_schemes):
    values = _values(params, device_secret, c_string, true="1", false="0")
    scheme = uri_schemes[0] if params["securemode"] == 2 else uri_schemes[1]
    values["SERVER_URI"] = c_string(_uri(scheme, params["host"], params["port"]))
    values["CA_PEM"] = c_string_lines(ca_pem or "")
    return values


def example_files(params: dict, device_secret: str, ca_pem: str | None) -> dict[str, str]:
    """Every file of every example, by its path in the kit."""
    mbedtls = signing_source("mbedtls")
    openssl = signing_source("openssl")
    paho = _c_values(params, device_secret, ca_pem, ("ssl", "tcp"))
    esp = _c_values(params, device_secret, ca_pem, ("mqtts", "mqtt"))
    arduino = dict(esp)
    arduino["USE_TIMESTAMP"] = "true" if params["timestamp"] is not None else "false"
    js = _values(params, device_secret, js_string, true="true", false="false")
    py = _values(params, device_secret, py_string, true="True", false="False")
    return {
        "signing/mqtt_sign_mbedtls.c": mbedtls,
        "signing/mqtt_sign_openssl.c": openssl,
        "signing/mqtt_sign.js": signing_source("node"),
        "signing/mqtt_sign.py": signing_source("micropython"),
        "c-paho/main.c": fill(template_text("paho_c_main.c"), {**paho, "SIGNING": openssl}),
        "c-paho/Makefile": template_text("paho_c_Makefile"),
        "node-mqttjs/index.js": fill(template_text("node_index.js"), js),
        "node-mqttjs/mqtt_sign.js": signing_source("node"),
        "node-mqttjs/package.json": template_text("node_package.json"),
        "arduino-esp32/arduino-esp32.ino": fill(
            template_text("arduino_esp32.ino"), {**arduino, "SIGNING": mbedtls}
        ),
        "esp-idf/CMakeLists.txt": template_text("esp_idf_CMakeLists.txt"),
        "esp-idf/main/CMakeLists.txt": template_text("esp_idf_main_CMakeLists.txt"),
        "esp-idf/main/main.c": fill(template_text("esp_idf_main.c"), {**esp, "SIGNING": mbedtls}),
        "micropython/main.py": fill(template_text("micropython_main.py.tmpl"), py),
        "micropython/mqtt_sign.py": signing_source("micropython"),
    }
