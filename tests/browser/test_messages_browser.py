"""The device page's Messages section in Chromium, against the real embedded broker and real
paho clients: a trace started from the page shows the device's publish within 2 s without a
reload, and "send to device" at QoS 1 to a subscribed client answers "acknowledged" (in English
and in Chinese) while the client receives the message."""

import time

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from devices import message_trace, signing
from tests.broker_fixtures import MqttTestClient
from tests.browser.pages import log_in_any_language, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.broker]

SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"  # the conftest device's
DEVICE_PAGE = "/products/a1B2c3D4e5F/devices/sensor-001/"
UP = "/a1B2c3D4e5F/sensor-001/up"
DOWN = "/a1B2c3D4e5F/sensor-001/down"


@pytest.fixture
def tracer(django_user_model):
    """Sees devices and may trace and send; nothing else (not even the secrets)."""
    user = django_user_model.objects.create_user("erin", password="erin-password")
    user.user_permissions.add(Permission.objects.get(codename="view_device"),
                              Permission.objects.get(codename="trace_device"))
    return user


@pytest.fixture
def device_client(mqtt_broker, device):
    """The device, connected as a real paho client and subscribed to DOWN at QoS 1."""
    rendered = signing.render(device.product.product_id, device.device_id, SECRET,
                              client_id="lab-1", securemode=3, signmethod="hmacsha256",
                              timestamp=signing.now_ms())
    client = MqttTestClient(rendered.mqtt_client_id, rendered.mqtt_username,
                            rendered.mqtt_password, host=mqtt_broker.host, port=mqtt_broker.port)
    try:
        assert client.connect() == 0
        assert client.subscribe(DOWN, qos=1) == 1
        yield client
    finally:
        client.close()


def start_trace_and_publish(page, device_client, status_text):
    page.locator("#trace-start").click()
    expect(page.locator("#trace-status")).to_contain_text(status_text)
    page.evaluate("window.__notReloaded = true")
    time.sleep(message_trace.TRACE_REFRESH_S * 2 + 0.2)  # the broker reads running traces every 0.5 s
    started = time.monotonic()
    device_client.publish(UP, b'{"t": 21.5}', qos=1).wait_for_publish(3)
    row = page.locator("#trace-rows tr").first
    expect(row).to_contain_text(UP, timeout=2000)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"the message showed {elapsed:.1f} s after the publish"
    expect(row.locator("pre.payload")).to_contain_text('"t": 21.5')
    assert page.evaluate("window.__notReloaded") is True  # polled in, not reloaded
    expect(page.locator("#trace-empty")).to_be_hidden()
    return row


def send_from_the_page(page, payload):
    page.locator("#send-topic").fill(DOWN)
    page.locator("#send-payload").fill(payload)
    page.locator("#send-qos").select_option("1")
    page.locator("#send-button").click()


def test_a_trace_shows_the_device_s_publish_and_a_send_is_acknowledged(page, device_client, tracer):
    log_in_any_language(page, "erin", "erin-password")
    page.goto(DEVICE_PAGE)
    expect(page.get_by_role("heading", name="Messages", exact=True)).to_be_visible()

    row = start_trace_and_publish(page, device_client, "Tracing until")
    expect(row).to_contain_text("from the device")
    screenshot(page, "messages-trace")

    send_from_the_page(page, "hello device")
    expect(page.locator(".messages")).to_contain_text("acknowledged by the device", timeout=8000)
    received = device_client.wait_for_messages(1)
    assert [(m.topic, m.payload, m.qos) for m in received] == [(DOWN, b"hello device", 1)]
    # Back on the page, the trace holds the delivery too (polled in as the page runs).
    delivered = page.locator("#trace-rows tr", has_text="hello device")
    expect(delivered).to_contain_text("to the device", timeout=3000)
    expect(delivered).to_contain_text(DOWN)


def test_the_section_in_chinese(browser, live_server, device_client, tracer):
    context = browser.new_context(base_url=live_server.url, locale="zh-CN")
    context.set_default_timeout(5000)
    page = context.new_page()
    try:
        log_in_any_language(page, "erin", "erin-password")
        page.goto(DEVICE_PAGE)
        section = page.locator("#messages")
        expect(section.get_by_role("heading", name="消息", exact=True)).to_be_visible()
        expect(section.get_by_role("heading", name="消息跟踪")).to_be_visible()
        expect(section.get_by_role("heading", name="发送到设备")).to_be_visible()
        expect(page.locator("#trace-start")).to_have_text("开始跟踪")

        row = start_trace_and_publish(page, device_client, "跟踪中")
        expect(row).to_contain_text("来自设备")

        send_from_the_page(page, "你好")
        expect(page.locator(".messages")).to_contain_text("设备已确认", timeout=8000)
        assert device_client.wait_for_messages(1)[0].payload == "你好".encode()
        expect(page.locator("#trace-rows tr", has_text="你好")).to_contain_text("发往设备",
                                                                                timeout=3000)
        screenshot(page, "messages-zh")
    finally:
        context.close()
