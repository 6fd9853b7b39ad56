"""Pressing "Test connection" in a real browser, with a real broker and a real db_worker."""

import re
import time

import pytest
from playwright.sync_api import expect

from devices.models import DeviceStatus
from tests.browser.pages import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.broker]

PAGE = "/products/a1B2c3D4e5F/devices/sensor-001/"


def press_and_wait(page, status):
    started = time.monotonic()
    page.get_by_role("button", name="Test connection").click()
    result = page.locator(f'#check-result[data-status="{status}"]')
    expect(result).to_be_visible(timeout=15000)
    return result, time.monotonic() - started


def test_pressing_test_connection_shows_the_result_without_a_reload(
    page, mqtt_broker, start_worker, device, owner
):
    start_worker(mqtt_broker)
    log_in(page, "alice", "alice-password")
    page.goto(PAGE)
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#check-history")).to_contain_text("No checks yet.")

    result, seconds = press_and_wait(page, "succeeded")
    expect(result).to_contain_text("Connected and published")
    expect(result).to_contain_text("CONNACK code: 0")
    expect(page.locator('#check-history tbody tr[data-status="succeeded"]')).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True
    print(f"\nbutton → result: {seconds * 1000:.0f} ms")
    screenshot(page, "check-succeeded")

    device.set_enabled(False)
    result, _ = press_and_wait(page, "failed")
    expect(result).to_contain_text("Refused by the broker: not authorized.")
    expect(result).to_contain_text("check that the device is enabled")
    expect(result).to_contain_text("Technical detail: CONNACK code 5")  # raw cause, labelled
    expect(page.locator("#check-history tbody tr")).to_have_count(2)
    expect(page.locator("#check-history tbody tr").first).to_have_attribute("data-status", "failed")
    # Rows the script refreshed read like the rows the server rendered (Y-m-d H:i:s).
    expect(page.locator("#check-history tbody tr time").first).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "check-failed")


def test_an_online_device_asks_for_confirmation_first(
    page, mqtt_broker, start_worker, device, owner
):
    start_worker(mqtt_broker)
    device.status = DeviceStatus.ONLINE
    device.save(update_fields=["status"])
    log_in(page, "alice", "alice-password")
    page.goto(PAGE)
    expect(page.locator("#check-online-warning")).to_contain_text("This device is online")

    dialogs = []

    def dismiss(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#check-result")).to_be_hidden()
    assert dialogs and "disconnects it" in dialogs[0]
    assert not device.checks.exists()

    page.once("dialog", lambda dialog: dialog.accept())
    result, _ = press_and_wait(page, "succeeded")
    expect(result).to_contain_text("Connected and published")


def test_it_works_in_chinese(page, mqtt_broker, start_worker, device, owner):
    start_worker(mqtt_broker)
    device.set_enabled(False)
    log_in(page, "alice", "alice-password")
    page.goto(PAGE)
    page.locator("button.lang-button[lang=zh-hans]").click()
    page.get_by_role("button", name="测试连接").click()
    result = page.locator('#check-result[data-status="failed"]')
    expect(result).to_contain_text("代理服务器拒绝：未授权。", timeout=15000)


def test_the_check_uses_the_options_chosen_in_the_panel(
    page, mqtt_broker, start_worker, device, owner
):
    start_worker(mqtt_broker)
    log_in(page, "alice", "alice-password")
    page.goto(PAGE)
    page.get_by_role("button", name="MQTT connection parameters").first.click()
    page.get_by_label("Plain TCP").check()
    page.locator("#opt-signmethod").select_option("hmacmd5")
    page.locator("#opt-clientId").fill("bench-7")
    expect(page.locator('[data-param="mqttClientId"]')).to_contain_text(
        "bench-7|securemode=3,signmethod=hmacmd5")
    press_and_wait(page, "succeeded")
    check = device.checks.get()
    assert (check.options["securemode"], check.options["signmethod"], check.options["clientId"]) == (
        "3", "hmacmd5", "bench-7")
