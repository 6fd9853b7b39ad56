"""The signature debugger names the mistake in CONNECT fields (vectors from tests/data/signing.json)."""

import pytest

from devices import diagnosis as debugger
from devices.models import Device, Product


def vector(vectors, name):
    return next(v for v in vectors["verify"] if v["name"] == name)


def explain(device, v, **overrides):
    fields = {
        "mqtt_client_id": v["mqttClientId"],
        "mqtt_username": v["mqttUsername"],
        "mqtt_password": v["mqttPassword"],
        "signed_content": "",
    }
    fields.update(overrides)
    return debugger.diagnose(device, **fields)


def test_it_accepts_the_documents_example(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "document example"))
    assert result.accepted is True
    assert "accepted" in result.codes()
    assert result.canonical_content == "clientId12345deviceIddeviceproductIdpktimestamp789"


def test_every_accepting_vector_is_accepted(doc_device, vectors):
    for v in vectors["verify"]:
        if v["accept"] and v["productId"] == "pk" and v["deviceSecret"] == "secret":
            assert explain(doc_device, v).accepted is True, v["name"]


def test_it_lists_the_expected_password_of_every_allowed_content(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "document example"), mqtt_password="")
    passwords = {e.content: e.password for e in result.expected}
    assert passwords["clientId12345deviceIddeviceproductIdpktimestamp789"] == (
        "dc8f8498a1a115b58f6a3afd526bc62a1665bf48"
    )
    assert passwords["deviceIddeviceproductIdpktimestamp789"] == vector(
        vectors, "signed without clientId")["mqttPassword"]
    assert passwords["clientId12345deviceIddeviceproductIdpk"] == vector(
        vectors, "signed without timestamp though one is given")["mqttPassword"]
    assert len(passwords) == 4
    assert result.accepted is None


def test_it_never_puts_the_secret_in_what_it_shows(db):
    product = Product.objects.create(product_id="pk", name="Example")
    device = Device.objects.create(product=product, device_id="device",
                                   device_secret="Zq7uniqueS3cretValue")
    result = debugger.diagnose(device, "12345|securemode=3,signmethod=hmacsha1,timestamp=789|",
                               "device&pk", "dc8f8498a1a115b58f6a3afd526bc62a1665bf48",
                               "clientId12345deviceIddeviceproductIdpktimestamp789")
    shown = repr(result.findings) + repr(result.expected) + repr(result.parsed)
    assert "Zq7uniqueS3cretValue" not in shown
    assert "wrong_secret" in result.codes()
    assert result.accepted is False


def test_it_finds_a_timestamp_that_differs_from_the_signed_one(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "timestamp in clientId differs from the signed one"))
    assert "timestamp_differs" in result.codes()
    message = next(f.message for f in result.findings if f.code == "timestamp_differs")
    assert "789" in message and "790" in message
    assert "wrong_secret" not in result.codes()


def test_it_finds_a_clientid_that_differs_from_the_signed_one(doc_device, vectors):
    # Signed for clientId "device" (the deviceId), sent with clientId 12345.
    from devices import signing

    password = signing.sign("secret", "clientIddevicedeviceIddeviceproductIdpktimestamp789", "hmacsha1")
    result = explain(doc_device, vector(vectors, "document example"), mqtt_password=password)
    assert result.codes().count("client_id_differs") == 1
    assert result.accepted is False


def test_it_names_a_clientid_over_64_characters(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "clientId longer than 64 characters"))
    assert "client_id_too_long" in result.codes()
    assert "64" in result.findings[-1].message


def test_it_names_an_unsupported_sign_method(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "unsupported signmethod"))
    assert "unsupported_signmethod" in result.codes()
    assert "hmacsha512" in result.findings[-1].message


def test_it_sees_past_a_missing_trailing_pipe(doc_device, vectors):
    v = vector(vectors, "document example")
    result = explain(doc_device, v, mqtt_client_id=v["mqttClientId"].rstrip("|"))
    assert result.codes()[0] == "missing_trailing_pipe"
    assert result.accepted is True  # the rest is right: only the '|' is missing


def test_it_reports_stray_spaces_and_looks_past_them(doc_device, vectors):
    v = vector(vectors, "document example")
    result = explain(doc_device, v, mqtt_password=" " + v["mqttPassword"] + "\n")
    assert "stray_spaces" in result.codes()
    assert result.accepted is True


def test_it_notes_uppercase_hex_which_is_accepted(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "uppercase hex is accepted"))
    assert "uppercase_hex" in result.codes()
    assert result.accepted is True


def test_it_finds_a_sign_method_that_does_not_match_the_password(doc_device, vectors):
    # Signed with hmacsha1 (40 hex digits) but the signmethod left out: the broker assumes md5.
    v = vector(vectors, "document example")
    result = explain(doc_device, v, mqtt_client_id="12345|securemode=3,timestamp=789|")
    assert "signmethod_default" in result.codes()
    assert "signmethod_mismatch" in result.codes()
    assert "signed_with_other_method" in result.codes()


def test_it_finds_parameters_signed_in_the_wrong_order(doc_device, vectors):
    from devices import signing

    wrong = "productIdpkdeviceIddeviceclientId12345timestamp789"
    password = signing.sign("secret", wrong, "hmacsha1")
    result = explain(doc_device, vector(vectors, "document example"), mqtt_password=password)
    assert "wrong_order" in result.codes()


def test_it_finds_a_username_in_the_wrong_order(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "document example"), mqtt_username="pk&device")
    assert "username_wrong_order" in result.codes()


def test_a_pasted_content_shows_which_part_differs(doc_device, vectors):
    from devices import signing

    content = "clientId12345deviceIddeviceproductIdpktimestamp788"
    password = signing.sign("secret", content, "hmacsha1")
    result = explain(doc_device, vector(vectors, "document example"), mqtt_password=password,
                     signed_content=content)
    assert "secret_ok" in result.codes()
    assert "timestamp_differs" in result.codes()


def test_a_pasted_content_in_other_case_is_named(doc_device, vectors):
    result = explain(doc_device, vector(vectors, "signed with another secret"),
                     signed_content="CLIENTID12345DEVICEIDDEVICEPRODUCTIDPKTIMESTAMP789")
    assert "content_case" in result.codes()


def test_the_mqttclientid_alone_is_enough(doc_device):
    result = debugger.diagnose(doc_device, "12345|securemode=3,signmethod=hmacsha1|")
    assert "username_assumed" in result.codes()
    assert "no_password" in result.codes()
    assert [e.content for e in result.expected] == [
        "clientId12345deviceIddeviceproductIdpk",
        "deviceIddeviceproductIdpk",
    ]


# The signing module's messages are English (it stays free of Django); the debugger says them
# again, from the stable code, in the reader's language, with the value at fault.
REFUSALS = [
    ("12345", "device&pk", "malformed_client_id", "没有找到“|”"),
    ("12345|securemode=3|x|", "device&pk", "malformed_client_id", "正好有两个“|”"),
    ("a,b|securemode=3|", "device&pk", "malformed_client_id", "','"),
    ("12345|securemode=3,securemode=2|", "device&pk", "malformed_client_id", "securemode 出现了两次"),
    ("12345|securemode|", "device&pk", "malformed_client_id", "key=value"),
    ("x" * 65 + "|securemode=3|", "device&pk", "client_id_too_long", "65"),
    ("12345|signmethod=hmacsha1|", "device&pk", "missing_securemode", "必须有 securemode"),
    ("12345|securemode=4|", "device&pk", "bad_securemode", "“4”"),
    ("12345|securemode=3,signmethod=sha512|", "device&pk", "unsupported_signmethod", "“sha512”"),
    ("12345|securemode=3,timestamp=12a|", "device&pk", "bad_timestamp", "“12a”"),
    ("12345|securemode=3,exclusive=yes|", "device&pk", "bad_exclusive", "“yes”"),
    ("12345|securemode=3|", "device&pk&x", "malformed_username", "正好一个“&”"),
    ("12345|securemode=3|", "dev ice&pk", "malformed_username", "1 到 64 个字符"),
]


@pytest.mark.parametrize("client_id, username, code, words", REFUSALS)
def test_refusals_of_the_signing_rules_are_said_in_chinese(doc_device, client_id, username,
                                                          code, words):
    from django.utils import translation

    with translation.override("zh-hans"):
        result = debugger.diagnose(doc_device, client_id, username, "")
    finding = next(f for f in result.findings if f.code == code)
    assert words in finding.message
    assert not any(word in finding.message for word in ("must", "Extension", "not valid"))


def test_refusals_in_english_still_name_the_value(doc_device):
    result = debugger.diagnose(doc_device, "12345|securemode=3,signmethod=sha512|", "device&pk")
    message = next(f for f in result.findings if f.code == "unsupported_signmethod").message
    assert "sha512" in message and "hmacsha256" in message
