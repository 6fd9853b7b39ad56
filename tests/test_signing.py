"""The signing scheme against the platform's vectors (facts from outside) and its properties."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import signing

VECTORS = json.loads((Path(__file__).parent / "data" / "signing.json").read_text())


@pytest.mark.parametrize("case", VECTORS["render"], ids=lambda c: c["name"])
def test_render_produces_the_vector_fields(case):
    rendered = signing.render(
        case["productId"],
        case["deviceId"],
        case["deviceSecret"],
        client_id=case["clientId"],
        securemode=case["securemode"],
        signmethod=case["signmethod"],
        timestamp=case["timestamp"],
        exclusive=bool(case["exclusive"]),
    )
    assert rendered.content == case["content"]
    assert rendered.mqtt_client_id == case["mqttClientId"]
    assert rendered.mqtt_username == case["mqttUsername"]
    assert rendered.mqtt_password == case["mqttPassword"]


@pytest.mark.parametrize("case", VECTORS["render"], ids=lambda c: c["name"])
def test_verify_accepts_each_rendered_vector(case):
    verdict = signing.verify(
        case["mqttClientId"], case["mqttUsername"], case["mqttPassword"], case["deviceSecret"]
    )
    assert verdict.accepted, verdict.reason


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: c["name"])
def test_verify_decides_each_vector_as_the_platform_does(case):
    verdict = signing.verify(
        case["mqttClientId"],
        case["mqttUsername"],
        case["mqttPassword"],
        case["deviceSecret"],
        product_id=case["productId"],
        device_id=case["deviceId"],
    )
    assert verdict.accepted is case["accept"], verdict.reason


def test_the_documented_example_gives_the_documented_password_prefix():
    # The original page prints dc8f8498a1a115b58f6a3afd526bc62a1665**** for its example.
    content = "clientId12345deviceIddeviceproductIdpktimestamp789"
    assert signing.sign("secret", content, "hmacsha1").startswith("dc8f8498a1a115b58f6a3afd526bc62a1665")


def test_signmethod_is_matched_without_regard_to_case():
    case = VECTORS["verify"][0]
    client_id = case["mqttClientId"].replace("hmacsha1", "HmacSHA1")
    verdict = signing.verify(client_id, case["mqttUsername"], case["mqttPassword"], "secret")
    assert verdict.accepted, verdict.reason


@pytest.mark.parametrize(
    "mqtt_client_id, code",
    [
        ("12345", "malformed_client_id"),
        ("12345|securemode=3,signmethod=hmacsha1", "malformed_client_id"),
        ("12345|securemode=3|x|", "malformed_client_id"),
        ("|securemode=3|", "malformed_client_id"),
        ("a b|securemode=3|", "malformed_client_id"),
        ("12345|securemode=4|", "bad_securemode"),
        ("12345|signmethod=hmacsha1|", "missing_securemode"),
        ("12345|securemode=3,timestamp=abc|", "bad_timestamp"),
        ("12345|securemode=3,exclusive=yes|", "bad_exclusive"),
        ("12345|securemode=3,securemode=2|", "malformed_client_id"),
        ("x" * 65 + "|securemode=3|", "client_id_too_long"),
    ],
)
def test_parse_refuses_malformed_client_ids_with_a_reason(mqtt_client_id, code):
    with pytest.raises(signing.SigningError) as caught:
        signing.parse_connect(mqtt_client_id, "device&pk")
    assert caught.value.code == code
    assert caught.value.message


@pytest.mark.parametrize("username", ["device", "device&pk&x", "&pk", "device&", "dev ice&pk"])
def test_parse_refuses_malformed_usernames(username):
    with pytest.raises(signing.SigningError) as caught:
        signing.parse_connect("12345|securemode=3|", username)
    assert caught.value.code == "malformed_username"


def test_securemode_must_match_the_listener_when_it_is_known():
    case = VECTORS["verify"][0]  # securemode=3
    args = (case["mqttClientId"], case["mqttUsername"], case["mqttPassword"], "secret")
    assert signing.verify(*args, transport="tcp").accepted
    refused = signing.verify(*args, transport="tls")
    assert not refused.accepted
    assert refused.code == "securemode_mismatch"


def test_a_maximum_clock_skew_requires_a_timestamp_inside_the_window():
    rendered = signing.render(
        "pk", "device", "secret", client_id="c1", securemode=3, signmethod="hmacsha1",
        timestamp=1_000_000,
    )
    args = (rendered.mqtt_client_id, rendered.mqtt_username, rendered.mqtt_password, "secret")
    assert signing.verify(*args, max_skew_ms=5000, now=1_004_000).accepted
    late = signing.verify(*args, max_skew_ms=5000, now=1_006_000)
    assert (late.accepted, late.code) == (False, "timestamp_out_of_window")
    untimed = signing.render(
        "pk", "device", "secret", client_id="c1", securemode=3, signmethod="hmacsha1", timestamp=None
    )
    missing = signing.verify(
        untimed.mqtt_client_id, untimed.mqtt_username, untimed.mqtt_password, "secret",
        max_skew_ms=5000,
    )
    assert (missing.accepted, missing.code) == (False, "missing_timestamp")


def test_verdict_reasons_never_contain_the_secret_or_password():
    case = VECTORS["verify"][6]  # signed with another secret
    verdict = signing.verify(case["mqttClientId"], case["mqttUsername"], case["mqttPassword"], "secret")
    assert not verdict.accepted
    assert "secret" not in verdict.reason.replace("device's secret", "")
    assert case["mqttPassword"] not in verdict.reason


# -- properties ---------------------------------------------------------------------------------

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@"
ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=64)
client_ids = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="|,=&", exclude_categories=("Zs", "Zl", "Zp", "Cc", "Cs")
    ),
    min_size=1,
    max_size=64,
).filter(lambda s: signing.client_id_error(s) is None)
secrets_ = st.text(alphabet=ID_CHARS, min_size=1, max_size=64)
methods = st.sampled_from(sorted(signing.SIGN_METHODS))
timestamps = st.one_of(st.none(), st.integers(min_value=0, max_value=10**13))
modes = st.sampled_from(signing.SECURE_MODES)


@st.composite
def rendered_params(draw):
    secret = draw(secrets_)
    params = signing.render(
        draw(ids),
        draw(ids),
        secret,
        client_id=draw(client_ids),
        securemode=draw(modes),
        signmethod=draw(methods),
        timestamp=draw(timestamps),
        exclusive=draw(st.booleans()),
    )
    return params, secret


def _verify(params, secret, **changes):
    fields = {
        "mqtt_client_id": params.mqtt_client_id,
        "mqtt_username": params.mqtt_username,
        "mqtt_password": params.mqtt_password,
        "device_secret": secret,
    }
    fields.update(changes)
    return signing.verify(
        fields["mqtt_client_id"],
        fields["mqtt_username"],
        fields["mqtt_password"],
        fields["device_secret"],
        product_id=params.product_id,
        device_id=params.device_id,
    )


def _change_one_character(draw, text, alphabet):
    index = draw(st.integers(min_value=0, max_value=len(text) - 1))
    replacement = draw(st.sampled_from([c for c in alphabet if c != text[index]]))
    return text[:index] + replacement + text[index + 1 :]


@settings(max_examples=300, deadline=None)
@given(rendered_params())
def test_verify_accepts_whatever_render_produced(rendered):
    params, secret = rendered
    verdict = _verify(params, secret)
    assert verdict.accepted, verdict.reason
    assert verdict.parsed.exclusive is params.exclusive
    assert verdict.parsed.client_id == params.client_id


@settings(max_examples=200, deadline=None)
@given(rendered_params(), st.data())
def test_one_changed_character_of_the_password_is_refused(rendered, data):
    params, secret = rendered
    # Changing only the case of a hex digit is allowed by the spec, so change to another digit.
    changed = _change_one_character(data.draw, params.mqtt_password, "0123456789abcdef")
    assert not _verify(params, secret, mqtt_password=changed).accepted


@settings(max_examples=200, deadline=None)
@given(rendered_params(), st.data())
def test_one_changed_character_of_the_secret_is_refused(rendered, data):
    params, secret = rendered
    changed = _change_one_character(data.draw, secret, ID_CHARS)
    assert not _verify(params, changed).accepted


@settings(max_examples=200, deadline=None)
@given(rendered_params(), st.data())
def test_one_changed_character_of_the_device_id_is_refused(rendered, data):
    params, secret = rendered
    changed = _change_one_character(data.draw, params.device_id, ID_CHARS)
    username = signing.build_username(changed, params.product_id)
    # Whether checked against the registry's device or against the secret, it must not pass.
    assert not _verify(params, secret, mqtt_username=username).accepted
    assert not signing.verify(params.mqtt_client_id, username, params.mqtt_password, secret).accepted


@settings(max_examples=200, deadline=None)
@given(rendered_params(), st.data())
def test_one_changed_character_of_the_product_id_is_refused(rendered, data):
    params, secret = rendered
    changed = _change_one_character(data.draw, params.product_id, ID_CHARS)
    username = signing.build_username(params.device_id, changed)
    assert not _verify(params, secret, mqtt_username=username).accepted
    assert not signing.verify(params.mqtt_client_id, username, params.mqtt_password, secret).accepted


@settings(max_examples=200, deadline=None)
@given(rendered_params(), st.data())
def test_one_changed_digit_of_the_timestamp_is_refused(rendered, data):
    params, secret = rendered
    if params.timestamp is None:
        return
    text = str(params.timestamp)
    changed = _change_one_character(data.draw, text, "0123456789")
    client_id = params.mqtt_client_id.replace(f"timestamp={text}", f"timestamp={changed}")
    assert not _verify(params, secret, mqtt_client_id=client_id).accepted


def test_stray_spaces_around_the_sign_method_are_refused():
    # The debugger calls stray spaces a mistake; the verifier must agree and refuse them.
    with pytest.raises(signing.SigningError) as caught:
        signing.parse_connect("12345|securemode=3,signmethod= hmacsha1 ,timestamp=789|", "device&pk")
    assert caught.value.code == "unsupported_signmethod"


def test_a_timestamp_longer_than_a_64_bit_number_is_refused():
    with pytest.raises(signing.SigningError) as caught:
        signing.parse_connect("12345|securemode=3,timestamp=" + "1" * 20 + "|", "device&pk")
    assert caught.value.code == "bad_timestamp"
    assert len(caught.value.message) < 200


# -- invisible and direction-changing characters (spec §2: no Cc or Cf in a clientId) -----------

INVISIBLE = [
    ("\u202e", "U+202E"),  # RIGHT-TO-LEFT OVERRIDE: "abc\u202efdp" reads as "abcpdf"
    ("\u200b", "U+200B"),  # ZERO WIDTH SPACE
    ("\ufeff", "U+FEFF"),  # ZERO WIDTH NO-BREAK SPACE (a byte order mark pasted from a file)
    ("\u2066", "U+2066"),  # LEFT-TO-RIGHT ISOLATE
    ("\u00ad", "U+00AD"),  # SOFT HYPHEN
    ("\x85", "U+0085"),  # NEXT LINE, a C1 control
    ("\x1b", "U+001B"),  # ESCAPE
]


@pytest.mark.parametrize("char, code_point", INVISIBLE)
def test_client_id_error_refuses_a_control_or_format_character_by_its_code_point(char, code_point):
    problem = signing.client_id_error(f"dev{char}ice")
    assert problem is not None
    assert code_point in problem
    assert char not in problem  # the message itself shows nothing invisible


@pytest.mark.parametrize("char, code_point", INVISIBLE)
def test_render_refuses_a_client_id_with_an_invisible_character(char, code_point):
    with pytest.raises(signing.SigningError) as caught:
        signing.render("pk", "device", "secret", client_id=f"{char}12345", securemode=3,
                       signmethod="hmacsha1", timestamp=789)
    assert caught.value.field == "clientId"
    assert code_point in caught.value.message


@pytest.mark.parametrize("char, code_point", INVISIBLE)
def test_verify_refuses_a_signed_client_id_with_an_invisible_character(char, code_point):
    client_id = f"123{char}45"
    content = f"clientId{client_id}deviceIddeviceproductIdpktimestamp789"
    password = signing.sign("secret", content, "hmacsha1")  # correctly signed, still refused
    verdict = signing.verify(f"{client_id}|securemode=3,signmethod=hmacsha1,timestamp=789|",
                             "device&pk", password, "secret")
    assert (verdict.accepted, verdict.code) == (False, "malformed_client_id")
    assert code_point in verdict.reason


def test_visible_non_ascii_client_ids_stay_allowed():
    for client_id in ("温度计-01", "Zähler", "AA:BB:CC:DD:EE:FF"):
        assert signing.client_id_error(client_id) is None


def test_a_lone_surrogate_in_a_client_id_is_refused_not_a_crash():
    # A JSON body may hold "\ud800"; it cannot be encoded (nor sent by a device), so it is refused.
    verdict = signing.verify("a\ud800|securemode=3|", "device&pk", "x", "secret")
    assert (verdict.accepted, verdict.code) == (False, "malformed_client_id")
    assert "U+D800" in verdict.reason
