"""The device page's connection log in Chromium: a real device's refusal appears within 2 s
without a reload, with the sentence that says what to change; a folded repeat updates its count."""

import time

import pytest
from playwright.sync_api import expect

from devices import signing
from tests.broker_fixtures import MqttTestClient
from tests.browser.pages import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.broker]

SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"  # the conftest device's


def connect_with_sha1(broker, device):
    rendered = signing.render(device.product.product_id, device.device_id, SECRET,
                              client_id="lab-1", securemode=3, signmethod="hmacsha256",
                              timestamp=signing.now_ms())
    parsed = signing.parse_connect(rendered.mqtt_client_id, rendered.mqtt_username)
    sha1 = signing.sign(SECRET, signing.accepted_contents(parsed)[0], "hmacsha1")
    client = MqttTestClient(rendered.mqtt_client_id, rendered.mqtt_username, sha1,
                            host=broker.host, port=broker.port)
    try:
        return client.connect()
    finally:
        client.close()


def test_a_refusal_appears_on_the_open_page_within_two_seconds(page, mqtt_broker, device, member):
    log_in(page, "bob", "bob-password")
    page.goto("/products/a1B2c3D4e5F/devices/sensor-001/")
    section = page.locator("#connection-log")
    expect(section.get_by_role("heading", name="Connection log")).to_be_visible()
    expect(page.locator("#connection-log-empty")).to_be_visible()

    started = time.monotonic()
    assert connect_with_sha1(mqtt_broker, device) == 0x86
    row = page.locator("#connection-log-rows tr").first
    expect(row).to_contain_text("bad_signature", timeout=2000)
    assert time.monotonic() - started < 2.5
    expect(row).to_contain_text("The password is right for hmacsha1")
    expect(row.locator(".connlog-count")).to_have_text("1")
    expect(page.locator("#connection-log-empty")).to_be_hidden()

    assert connect_with_sha1(mqtt_broker, device) == 0x86  # the same mistake: folded
    expect(page.locator("#connection-log-rows tr").first.locator(".connlog-count")).to_have_text(
        "2", timeout=2000)
    assert page.locator("#connection-log-rows tr").count() == 1
    screenshot(page, "connection-log")


def test_the_page_in_chinese_shows_the_words_in_chinese(browser, live_server, transactional_db,
                                                        mqtt_broker, device, member):
    context = browser.new_context(base_url=live_server.url, locale="zh-CN")
    page = context.new_page()
    try:
        page.goto("/accounts/login/")
        page.locator("#id_username").fill("bob")
        page.locator("#id_password").fill("bob-password")
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(lambda url: "/accounts/login/" not in url)
        page.goto("/products/a1B2c3D4e5F/devices/sensor-001/")
        expect(page.get_by_role("heading", name="连接日志")).to_be_visible()
        assert connect_with_sha1(mqtt_broker, device) == 0x86
        row = page.locator("#connection-log-rows tr").first
        expect(row).to_contain_text("密码不是该设备密钥的签名", timeout=2000)
        expect(row).to_contain_text("密钥无误")
    finally:
        context.close()
