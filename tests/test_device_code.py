"""The device-side signing functions, compiled and run with real toolchains against the signing
vectors, and the per-language quoting of the values the examples are filled in with."""

import ast
import json
import subprocess

import pytest

from devices import device_code
from tests import toolchains

# Hostile text: quotes, escapes, trigraphs, comment and template markers, printf formats,
# control characters, an octal escape followed by digits, non-ASCII, the JS line separators.
HOSTILE = [
    'a"b',
    "back\\slash",
    "??=??/??'",
    "\\x41\\n",
    "line\nbreak\r\ttab",
    "`${process.exit(3)}` ' \"",
    "*/ /* // --> </script>",
    "%s%n%d",
    "\x01" + "7" + "\x7f",
    "é中文🙂",
    "\u2028\u2029",
    "#define X 1",
    "'''\"\"\"",
]

DRIVER = r"""
#include <stdlib.h>
/* argv: productId deviceId deviceSecret clientId securemode signmethod timestamp|-1 exclusive */
int main(int argc, char **argv)
{
    if (argc != 9) return 3;
    mqtt_sign_fields fields;
    if (mqtt_sign(argv[1], argv[2], argv[3], argv[4], atoi(argv[5]), argv[6], atoll(argv[7]),
                  atoi(argv[8]), &fields) != 0) return 2;
    printf("%s\n%s\n%s\n", fields.client_id, fields.username, fields.password);
    return 0;
}
"""


def _arguments(vector):
    timestamp = vector["timestamp"]
    return [
        vector["productId"], vector["deviceId"], vector["deviceSecret"], vector["clientId"],
        str(vector["securemode"]), vector["signmethod"],
        "-1" if timestamp is None else str(timestamp), "1" if vector["exclusive"] else "0",
    ]


def _expected(vector):
    return [vector["mqttClientId"], vector["mqttUsername"], vector["mqttPassword"]]


@pytest.fixture(scope="module")
def render_vectors():
    from tests.conftest import DATA

    return json.loads((DATA / "signing.json").read_text())["render"]


@pytest.mark.parametrize(
    "language, header, package, libraries",
    [
        ("mbedtls", "mbedtls/md.h", "libmbedtls-dev", ["-lmbedcrypto"]),
        ("openssl", "openssl/hmac.h", "libssl-dev", ["-lcrypto"]),
    ],
)
def test_the_c_signing_function_gives_every_render_vector(
    language, header, package, libraries, render_vectors, tmp_path
):
    toolchains.need_header(header, package)
    binary = toolchains.compile_c(
        device_code.signing_source(language) + DRIVER, tmp_path, libraries
    )
    assert len(render_vectors) >= 4
    for vector in render_vectors:
        result = subprocess.run(
            [str(binary), *_arguments(vector)], capture_output=True, text=True, timeout=10
        )
        assert result.returncode == 0, (vector["name"], result.stderr)
        assert result.stdout.splitlines() == _expected(vector), vector["name"]


@pytest.mark.parametrize("language", ["mbedtls", "openssl"])
def test_the_c_signing_function_refuses_an_unknown_sign_method(language, tmp_path):
    header, library = {
        "mbedtls": ("mbedtls/md.h", "-lmbedcrypto"), "openssl": ("openssl/hmac.h", "-lcrypto"),
    }[language]
    toolchains.need_header(header, "libmbedtls-dev / libssl-dev")
    binary = toolchains.compile_c(device_code.signing_source(language) + DRIVER, tmp_path, [library])
    result = subprocess.run(
        [str(binary), "pk", "device", "secret", "12345", "3", "hmacsha512", "789", "0"],
        capture_output=True, text=True, timeout=10,
    )
    assert result.returncode == 2
    long_id = "x" * 200  # longer than the buffers: refused, not overflowed
    result = subprocess.run(
        [str(binary), "pk", long_id, "secret", "12345", "3", "hmacsha1", "789", "0"],
        capture_output=True, text=True, timeout=10,
    )
    assert result.returncode == 2


def test_the_node_signing_function_gives_every_render_vector(render_vectors, tmp_path):
    node = toolchains.need_node()
    (tmp_path / "mqtt_sign.js").write_text(device_code.signing_source("node"))
    (tmp_path / "vectors.json").write_text(json.dumps(render_vectors))
    script = """
const { mqttSign } = require('./mqtt_sign');
const vectors = require('./vectors.json');
const out = vectors.map((v) => mqttSign({ ...v, exclusive: Boolean(v.exclusive) }));
process.stdout.write(JSON.stringify(out));
"""
    (tmp_path / "run.js").write_text(script)
    result = subprocess.run([node, "run.js"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    for vector, answer in zip(render_vectors, answers, strict=True):
        assert [answer["mqttClientId"], answer["mqttUsername"], answer["mqttPassword"]] == (
            _expected(vector)
        ), vector["name"]


def test_the_micropython_signing_function_gives_every_render_vector_under_cpython(render_vectors):
    namespace = {}
    exec(compile(device_code.signing_source("micropython"), "mqtt_sign.py", "exec"), namespace)
    mqtt_sign = namespace["mqtt_sign"]
    for vector in render_vectors:
        fields = mqtt_sign(
            vector["productId"], vector["deviceId"], vector["deviceSecret"], vector["clientId"],
            vector["securemode"], vector["signmethod"], vector["timestamp"],
            bool(vector["exclusive"]),
        )
        assert list(fields) == _expected(vector), vector["name"]
    with pytest.raises(ValueError, match="signmethod"):
        mqtt_sign("pk", "device", "secret", "12345", 3, "hmacsha512")


def test_the_arduino_and_esp_idf_examples_hold_the_tested_mbedtls_function_verbatim():
    params = {
        "productId": "pk", "deviceId": "device", "clientId": "12345", "securemode": 2,
        "signmethod": "hmacsha1", "timestamp": 789, "exclusive": False, "host": "127.0.0.1",
        "port": 8883, "mqttClientId": "", "mqttUsername": "", "mqttPassword": "",
    }
    files = device_code.example_files(params, "secret", "-----BEGIN CERTIFICATE-----\nAA\n")
    mbedtls = device_code.signing_source("mbedtls")
    assert "mbedtls_md_hmac" in mbedtls
    assert mbedtls in files["arduino-esp32/arduino-esp32.ino"]
    assert mbedtls in files["esp-idf/main/main.c"]
    assert device_code.signing_source("openssl") in files["c-paho/main.c"]
    assert files["node-mqttjs/mqtt_sign.js"] == device_code.signing_source("node")
    assert files["micropython/mqtt_sign.py"] == device_code.signing_source("micropython")
    for path, text in files.items():
        assert "@@" not in text, path


def test_the_c_string_helper_survives_hostile_text(tmp_path):
    toolchains.need_gcc()
    lines = ["#include <stdio.h>", "int main(void)", "{"]
    for value in HOSTILE:
        literal = device_code.c_string(value)
        assert literal.isascii() and "\n" not in literal
        lines.append(f"    {{ static const char s[] = {literal}; "
                     "fwrite(s, 1, sizeof s - 1, stdout); fputc(0, stdout); }")
    # The multi-line form (the CA certificate) joins back to the text.
    pem = "-----BEGIN CERTIFICATE-----\nMII\"?\\\n-----END CERTIFICATE-----\n"
    lines.append(f"    {{ static const char s[] = {device_code.c_string_lines(pem)}; "
                 "fwrite(s, 1, sizeof s - 1, stdout); fputc(0, stdout); }")
    lines += ["    return 0;", "}"]
    binary = toolchains.compile_c("\n".join(lines) + "\n", tmp_path, [])
    output = subprocess.run([str(binary)], capture_output=True, timeout=10).stdout
    assert output.split(b"\0")[:-1] == [v.encode("utf-8") for v in [*HOSTILE, pem]]


def test_the_js_string_helper_survives_hostile_text(tmp_path):
    node = toolchains.need_node()
    literals = ",\n".join(device_code.js_string(value) for value in HOSTILE)
    (tmp_path / "values.js").write_text(
        f"'use strict';\nconst values = [\n{literals}\n];\n"
        "process.stdout.write(JSON.stringify(values));\n"
    )
    result = subprocess.run([node, "values.js"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == HOSTILE


def test_the_python_string_helper_survives_hostile_text():
    for value in HOSTILE:
        literal = device_code.py_string(value)
        assert literal.isascii() and "\n" not in literal
        assert ast.literal_eval(literal) == value


def test_a_marker_without_a_value_is_an_error_not_a_broken_file():
    with pytest.raises(KeyError):
        device_code.fill("x = @@MISSING@@", {})


def test_the_connect_size_of_36_character_ids_with_hmacsha256_is_252_bytes():
    # Issue 12's example: 36-character ids and an hmacsha256 password, about 252 bytes.
    # 1 + 2 (remaining length 249 needs two bytes) + 10 + (2 + 96) + (2 + 73) + (2 + 64).
    ident = "d" * 36
    params = {
        "mqttClientId": ident + "|securemode=2,signmethod=hmacsha256,timestamp=1700000000000|",
        "mqttUsername": ident + "&" + "p" * 36,
        "mqttPassword": "a" * 64,
    }
    assert device_code.connect_packet_size(params) == 252
    assert device_code.size_warnings(252) == [128]
    assert device_code.size_warnings(257) == [256, 128]
    assert device_code.size_warnings(128) == []


def test_the_connect_size_of_the_document_example_is_small():
    # 12345|securemode=3,signmethod=hmacsha1,timestamp=789| (53), device&pk (9), 40 hex digits:
    # 1 + 1 + 10 + 55 + 11 + 42 = 120.
    params = {
        "mqttClientId": "12345|securemode=3,signmethod=hmacsha1,timestamp=789|",
        "mqttUsername": "device&pk",
        "mqttPassword": "dc8f8498a1a115b58f6a3afd526bc62a1665bf48",
    }
    assert device_code.connect_packet_size(params) == 120
