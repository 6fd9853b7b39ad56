"""The OpenAPI description: a static document (devices/openapi.json), served as it is, whose
enums and patterns equal the constants the code decides with."""

import json
import re
from pathlib import Path

import pytest
from django.urls import resolve
from hypothesis import assume, given
from hypothesis import strategies as st

from devices import message_trace, signing
from devices.api import CHECK_BODY_FIELDS, MESSAGE_BODY_FIELDS, TRACE_BODY_FIELDS
from devices.choices import PAYLOAD_ENCODINGS, SEND_QOS_LEVELS, SendResult, TraceDirection
from devices.connection_check import PROTOCOLS, Outcome
from devices.models import CheckStatus
from devices.options import QUERY_NAMES, ConnectionOptions, OptionError

DOCUMENT = Path(__file__).parent.parent / "devices" / "openapi.json"
MQTT_PARAMS = "/api/v1/products/{productId}/devices/{deviceId}/mqtt-params"
CHECKS = "/api/v1/products/{productId}/devices/{deviceId}/checks"
CHECK = "/api/v1/checks/{id}"
MESSAGES = "/api/v1/products/{productId}/devices/{deviceId}/messages"
TRACES = "/api/v1/products/{productId}/devices/{deviceId}/traces"
TRACE = "/api/v1/traces/{id}"
TRACE_STOP = "/api/v1/traces/{id}/stop"


@pytest.fixture(scope="module")
def document():
    return json.loads(DOCUMENT.read_text())


def _parameters(document, path, method):
    item = document["paths"][path]
    return {p["name"]: p for p in item.get("parameters", []) + item[method].get("parameters", [])}


def _check_body(document):
    return document["paths"][CHECKS]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _body(document, path):
    return document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _anchored(pattern):
    """A JSON Schema pattern as a Python regex for fullmatch (its ^...$ are ECMA anchors;
    Python's $ would also match before a final newline)."""
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    return re.compile(pattern[1:-1])


# -- served as it is -----------------------------------------------------------------------------


def test_the_document_is_served_as_it_is(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.content == DOCUMENT.read_bytes()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_other_methods_than_get_are_a_405_in_the_error_format(client, method):
    response = getattr(client, method)("/api/v1/openapi.json")
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"


# -- the enums are the code's --------------------------------------------------------------------


def test_the_query_options_are_the_code_s(document):
    query = [p["name"] for p in document["paths"][MQTT_PARAMS]["get"]["parameters"]
             if p["in"] == "query"]
    assert query == list(QUERY_NAMES)


def test_the_check_body_fields_are_the_code_s(document):
    body = _check_body(document)
    assert body["additionalProperties"] is False
    assert set(body["properties"]) == set(CHECK_BODY_FIELDS)


def test_the_sign_methods_are_the_signing_module_s(document):
    query = _parameters(document, MQTT_PARAMS, "get")
    assert query["signmethod"]["schema"]["enum"] == list(signing.SIGN_METHODS)
    assert _check_body(document)["properties"]["signmethod"]["enum"] == list(signing.SIGN_METHODS)


def test_the_securemodes_are_the_signing_module_s(document):
    query = _parameters(document, MQTT_PARAMS, "get")
    assert query["securemode"]["schema"]["enum"] == [str(m) for m in signing.SECURE_MODES]
    assert _check_body(document)["properties"]["securemode"]["enum"] == list(signing.SECURE_MODES)
    answer = document["components"]["schemas"]["MqttParams"]["properties"]
    assert answer["securemode"]["enum"] == list(signing.SECURE_MODES)


def test_the_check_protocols_are_the_runner_s(document):
    assert set(_check_body(document)["properties"]["protocol"]["enum"]) == set(PROTOCOLS)


def test_the_check_statuses_are_the_model_s(document):
    status = document["components"]["schemas"]["Check"]["properties"]["status"]
    assert status["enum"] == list(CheckStatus.values)


def test_the_check_outcomes_are_the_runner_s(document):
    outcome = document["components"]["schemas"]["Check"]["properties"]["outcome"]
    codes = [value for name, value in vars(Outcome).items() if name.isupper()]
    assert outcome["nullable"] is True
    assert outcome["enum"] == [*codes, None]


def test_the_client_id_length_is_the_signing_module_s(document):
    schema = _parameters(document, MQTT_PARAMS, "get")["clientId"]["schema"]
    assert (schema["minLength"], schema["maxLength"]) == (1, signing.CLIENT_ID_MAX_LENGTH)
    body = _check_body(document)["properties"]["clientId"]
    assert (body["minLength"], body["maxLength"]) == (1, signing.CLIENT_ID_MAX_LENGTH)


def test_the_session_cookie_is_the_one_the_portal_sets(document, settings):
    session = document["components"]["securitySchemes"]["session"]
    assert session == {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


def test_the_error_schema_has_the_fields_every_error_carries(document, client):
    schema = document["components"]["schemas"]["Error"]["properties"]["error"]
    actual = client.get("/api/v1/checks/1").json()["error"]  # a 401
    assert set(schema["required"]) == set(schema["properties"]) == set(actual)


def test_every_documented_path_is_served_by_the_api(document):
    samples = {"{productId}": "pk", "{deviceId}": "dev", "{id}": "7"}
    for path in document["paths"]:
        url = path
        for placeholder, value in samples.items():
            url = url.replace(placeholder, value)
        assert resolve(url).url_name.startswith("api-"), path


# -- message trace and send to device ------------------------------------------------------------


def test_the_send_body_fields_and_qos_levels_are_the_code_s(document):
    body = _body(document, MESSAGES)
    assert body["additionalProperties"] is False
    assert list(body["properties"]) == list(MESSAGE_BODY_FIELDS)
    assert body["properties"]["qos"]["enum"] == list(SEND_QOS_LEVELS)
    answer = document["components"]["schemas"]["SendAnswer"]["properties"]
    assert answer["qos"]["enum"] == list(SEND_QOS_LEVELS)
    assert f"{message_trace.MAX_SEND_BYTES} bytes" in body["properties"]["payload"]["description"]


def test_the_send_results_are_the_code_s(document):
    answer = document["components"]["schemas"]["SendAnswer"]["properties"]
    assert answer["result"]["enum"] == list(SendResult.values)


def test_the_trace_body_and_its_minutes_are_the_code_s(document):
    body = _body(document, TRACES)
    assert body["additionalProperties"] is False
    assert list(body["properties"]) == list(TRACE_BODY_FIELDS)
    minutes = body["properties"]["minutes"]
    assert (minutes["minimum"], minutes["maximum"], minutes["default"]) == (
        1, message_trace.MAX_MINUTES, message_trace.DEFAULT_MINUTES)


def test_the_trace_directions_and_encodings_are_the_code_s(document):
    message = document["components"]["schemas"]["TraceMessage"]["properties"]
    assert message["direction"]["enum"] == list(TraceDirection.values)
    assert message["encoding"]["enum"] == list(PAYLOAD_ENCODINGS)
    assert f"first {message_trace.PAYLOAD_BYTES} bytes" in message["payload"]["description"]


@pytest.fixture
def traced_message(device):
    from devices.models import TraceMessage

    trace = message_trace.start_trace(device, None)
    TraceMessage.objects.create(trace=trace, at=trace.started_at, direction="from_device",
                                topic="/a1B2c3D4e5F/sensor-001/up", qos=1, size=2, payload=b"{}")
    return trace


def test_the_trace_schema_has_the_fields_of_the_api_s_answer(document, owner_client, traced_message):
    answer = owner_client.get(f"/api/v1/traces/{traced_message.pk}").json()
    schemas = document["components"]["schemas"]
    assert set(schemas["Trace"]["properties"]) == set(answer)
    assert set(schemas["TraceMessage"]["properties"]) == set(answer["messages"][0])
    assert set(schemas["Trace"]["required"]) <= set(answer)
    assert set(schemas["TraceMessage"]["required"]) <= set(answer["messages"][0])


def test_the_send_answer_schema_has_the_fields_of_the_code_s_answer(document):
    answer = message_trace.send_answer(1, SendResult.NO_SUBSCRIPTION, [["/a/#", 1]], "/a/b", 1)
    schema = document["components"]["schemas"]["SendAnswer"]
    assert set(schema["properties"]) == set(schema["required"]) == set(answer)
    assert set(schema["properties"]["subscriptions"]["items"]["properties"]) == set(
        answer["subscriptions"][0])


@pytest.mark.parametrize("after", ["0", "12", "1" * 18, "1" * 19, "-1", "1.5", " 1", "a",
                                   "\u00b2", "\u0661\u0662", "\uff11"])
def test_the_after_pattern_accepts_exactly_what_the_api_does(document, owner_client,
                                                             traced_message, after):
    pattern = _anchored(_parameters(document, TRACE, "get")["after"]["schema"]["pattern"])
    response = owner_client.get(f"/api/v1/traces/{traced_message.pk}", {"after": after})
    assert response.status_code == (200 if pattern.fullmatch(after) else 400), response.content[:200]


def test_the_trace_endpoints_answer_what_the_document_says(document, owner_client, device):
    """Each documented status is one the endpoint can answer: here the success ones."""
    started = owner_client.post("/api/v1/products/a1B2c3D4e5F/devices/sensor-001/traces",
                                {"minutes": 2}, content_type="application/json")
    assert str(started.status_code) in document["paths"][TRACES]["post"]["responses"]
    assert started.status_code == 201
    stopped = owner_client.post(f"/api/v1/traces/{started.json()['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["running"] is False
    assert "200" in document["paths"][TRACE_STOP]["post"]["responses"]


# -- the patterns decide as the code does --------------------------------------------------------

ID_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=70) | st.from_regex(
    r"[A-Za-z0-9._:@\-&| \n]{0,66}", fullmatch=True
)


@pytest.mark.parametrize("path", [MQTT_PARAMS, CHECKS])
@pytest.mark.parametrize("name", ["productId", "deviceId"])
@given(value=ID_TEXT)
def test_the_id_patterns_accept_exactly_the_ids_the_signing_module_does(path, name, value):
    method = "get" if path == MQTT_PARAMS else "post"
    document = json.loads(DOCUMENT.read_text())
    pattern = _anchored(_parameters(document, path, method)[name]["schema"]["pattern"])
    assert bool(pattern.fullmatch(value)) == (signing.id_error(value) is None)


TIMESTAMP_TEXT = (
    st.sampled_from(["now", "none", "None", "NOW", "", "0", "1" * 16, "1" * 17, "-1", "1.5"])
    | st.from_regex(r"[0-9]{1,18}", fullmatch=True)
    | st.text(max_size=18)
)


@given(value=TIMESTAMP_TEXT)
def test_the_timestamp_pattern_accepts_exactly_what_the_options_do(value):
    document = json.loads(DOCUMENT.read_text())
    schema = _parameters(document, MQTT_PARAMS, "get")["timestamp"]["schema"]
    assume(value != "")  # an empty option takes its default; the document does not say so
    try:
        ConnectionOptions.from_query({"timestamp": value})
        accepted = True
    except OptionError:
        accepted = False
    assert bool(_anchored(schema["pattern"]).fullmatch(value)) == accepted
