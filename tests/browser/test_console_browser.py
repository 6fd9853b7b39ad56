"""The console in a real browser: log in, open a device, the parameters panel, copy, options,
a bad clientId fixed as you type, Chinese, and the signature debugger finding a planted mistake."""

import json
import re

import pytest
from playwright.sync_api import expect

from devices import signing
from devices.models import Device, Product
from tests.browser.pages import log_in, screenshot

pytestmark = pytest.mark.browser


def vector(vectors, name):
    return next(v for v in vectors["render"] if v["name"] == name)


@pytest.fixture
def doc_device(transactional_db):
    """The device of the spec's worked example (productId pk, deviceId device, secret secret)."""
    product = Product.objects.create(product_id="pk", name="Example product")
    return Device.objects.create(product=product, device_id="device", name="Worked example",
                                 device_secret="secret")


def open_panel(page):
    page.get_by_role("button", name="MQTT connection parameters").click()
    expect(page.locator("#mqtt-params")).to_be_visible()


def read_params(page):
    return {
        element.get_attribute("data-param"): element.text_content()
        for element in page.locator("[data-param]").all()
    }


def test_the_panel_gives_the_spec_vector_and_copies_it(page, owner, doc_device, vectors):
    v = vector(vectors, "document example")
    log_in(page, "alice", "alice-password")
    page.goto("/devices/")
    page.get_by_role("link", name="device", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("device")
    screenshot(page, "device-page")
    open_panel(page)
    # The defaults (TCP here, hmacsha256, now) give fields the verifier accepts.
    defaults = read_params(page)
    assert defaults["signmethod"] == "hmacsha256" and defaults["securemode"] == "3"
    assert signing.verify(defaults["mqttClientId"], defaults["mqttUsername"],
                          defaults["mqttPassword"], "secret").accepted

    # Choose the vector's options; the panel follows without a page load.
    page.get_by_label("Plain TCP").check()
    page.get_by_label("Sign method").select_option(v["signmethod"])
    page.get_by_label("Timestamp").fill(str(v["timestamp"]))
    page.get_by_label("clientId", exact=True).fill(v["clientId"])
    expect(page.locator("[data-param=mqttClientId]")).to_have_text(v["mqttClientId"])
    expect(page.locator("[data-param=mqttPassword]")).to_have_text(v["mqttPassword"])
    screenshot(page, "panel")

    params = read_params(page)
    assert params == {
        "host": "mqtt.example.com", "port": "1883",
        "mqttClientId": v["mqttClientId"], "mqttUsername": v["mqttUsername"],
        "mqttPassword": v["mqttPassword"],
        "productId": "pk", "deviceId": "device", "clientId": v["clientId"], "securemode": "3",
        "signmethod": v["signmethod"], "timestamp": str(v["timestamp"]), "exclusive": "false",
    }
    verdict = signing.verify(params["mqttClientId"], params["mqttUsername"],
                             params["mqttPassword"], "secret")
    assert verdict.accepted, verdict.reason

    page.get_by_role("button", name="Copy mqttPassword").click()
    expect(page.get_by_role("button", name="Copy mqttPassword")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == v["mqttPassword"]
    page.get_by_role("button", name="Copy mqttClientId").click()
    assert page.evaluate("navigator.clipboard.readText()") == v["mqttClientId"]

    page.get_by_role("button", name="Copy all (JSON)").click()
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert copied == {"clientId": v["mqttClientId"], "username": v["mqttUsername"],
                      "mqttHostUrl": "mqtt.example.com", "passwd": v["mqttPassword"], "port": 1883}

    # Options are kept in the address: a reload shows the same parameters.
    page.reload()
    expect(page.locator("[data-param=mqttPassword]")).to_have_text(v["mqttPassword"])

    # Exclusive and no timestamp: the panel recomputes.
    page.get_by_label("Exclusive connection").check()
    page.get_by_label("Timestamp").fill("none")
    expect(page.locator("[data-param=mqttClientId]")).to_have_text(
        "12345|securemode=3,signmethod=hmacsha1,exclusive=true|")
    params = read_params(page)
    assert signing.verify(params["mqttClientId"], params["mqttUsername"], params["mqttPassword"],
                          "secret").accepted


def test_a_bad_clientid_is_explained_while_typing_and_fixed(page, owner, doc_device):
    log_in(page, "alice", "alice-password")
    page.goto("/products/pk/devices/device/")
    open_panel(page)
    field = page.get_by_label("clientId", exact=True)
    field.fill("")
    field.press_sequentially("AA:BB|CC", delay=20)
    error = page.locator("#err-clientId")
    expect(error).to_contain_text("must not contain")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-param=mqttPassword]")).to_have_count(0)
    expect(field).to_be_focused()  # typing is never interrupted
    screenshot(page, "bad-client-id")
    field.fill("AA:BB-CC")
    expect(error).to_be_empty()
    expect(page.locator("[data-param=mqttClientId]")).to_have_text(
        re.compile(r"^AA:BB-CC\|securemode=3,signmethod=hmacsha256,timestamp=\d+\|$"))
    expect(field).not_to_have_attribute("aria-invalid", "true")


def test_switching_to_chinese(page, owner, doc_device):
    log_in(page, "alice", "alice-password")
    page.goto("/products/pk/devices/device/")
    page.get_by_role("button", name="中文").click()
    expect(page.get_by_role("button", name="MQTT连接参数")).to_be_visible()
    page.get_by_role("button", name="MQTT连接参数").click()
    expect(page.get_by_role("button", name="一键复制（JSON）")).to_be_visible()
    screenshot(page, "panel-zh")
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("button", name="MQTT connection parameters")).to_be_visible()


def test_the_debugger_finds_a_planted_mistake(page, owner, doc_device, vectors):
    v = vector(vectors, "document example")
    log_in(page, "alice", "alice-password")
    page.goto("/products/pk/devices/device/")
    page.get_by_role("link", name="Signature debugger").click()
    # Planted: the device signed clientId 12345 but sends clientId 99999.
    page.get_by_label("mqttClientId").fill(v["mqttClientId"].replace("12345", "99999"))
    page.get_by_label("mqttUsername").fill(v["mqttUsername"])
    page.get_by_label("mqttPassword").fill(v["mqttPassword"])
    page.get_by_label("Content the device signed").fill(v["content"])
    page.get_by_role("button", name="Explain").click()
    finding = page.locator('[data-code="client_id_differs"]')
    expect(finding).to_be_visible()
    expect(finding).to_contain_text("12345")
    expect(finding).to_contain_text("99999")
    expect(page.locator('[data-code="secret_ok"]')).to_be_visible()
    expect(page.locator("#canonical-content")).to_have_text(
        v["content"].replace("12345", "99999"))
    screenshot(page, "debugger")
    assert "secret</code>" not in page.content()


def test_a_member_sees_no_password_and_the_reason(page, member, doc_device):
    log_in(page, "bob", "bob-password")
    page.goto("/products/pk/devices/device/")
    open_panel(page)
    expect(page.locator("[data-param=mqttUsername]")).to_have_text("device&pk")
    expect(page.locator("[data-param=mqttPassword]")).to_have_count(0)
    expect(page.locator("#password-hidden-note")).to_contain_text("Can view device secrets")
    expect(page.get_by_role("link", name="Signature debugger")).to_have_count(0)


def test_the_panel_works_without_javascript(browser, live_server, owner, doc_device):
    context = browser.new_context(base_url=live_server.url, locale="en-US",
                                  java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, "alice", "alice-password")
        page.goto("/products/pk/devices/device/")
        open_panel(page)
        page.get_by_label("Plain TCP").check()
        page.get_by_label("Timestamp").fill("789")
        page.get_by_label("clientId", exact=True).fill("12345")
        page.get_by_label("Sign method").select_option("hmacsha1")
        page.get_by_role("button", name="Update parameters").click()
        expect(page.locator("[data-param=mqttPassword]")).to_have_text(
            "dc8f8498a1a115b58f6a3afd526bc62a1665bf48")
    finally:
        context.close()


def test_a_narrow_screen_never_scrolls_sideways(browser, live_server, owner, doc_device, vectors):
    """A phone's width: long command lines scroll inside their block, not the page, and the
    debugger's answer is brought into view after Explain."""
    v = vector(vectors, "document example")
    context = browser.new_context(base_url=live_server.url, locale="en-US",
                                  viewport={"width": 390, "height": 640})
    try:
        page = context.new_page()
        log_in(page, "alice", "alice-password")
        for url in ("/devices/", "/products/", "/products/pk/devices/device/?panel=1",
                    "/products/pk/devices/device/?panel=1&clientId=a|b",
                    "/products/pk/devices/device/debugger/"):
            page.goto(url)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
        page.get_by_label("mqttClientId").fill(v["mqttClientId"])
        page.get_by_label("mqttPassword").fill(v["mqttPassword"][:-1] + "0")
        page.get_by_role("button", name="Explain").click()
        expect(page.locator("#diagnosis-title")).to_be_in_viewport()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "debugger-narrow")
    finally:
        context.close()
