"""Playwright (sync API) driving Debian's Chromium against pytest-django's live server.

One browser per session; a fresh context (cookies, clipboard permission) per test. The helpers
(``log_in``, ``screenshot``) are in tests/browser/pages.py. Without
/usr/bin/chromium the tests skip and say how to enable them, unless PORTAL_REQUIRE_BROWSER=1
(set by .ci/run), where a missing browser is a failure.
"""

import os
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django's ORM calls from the test body
# are still synchronous and safe here.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MISSING = (
    f"Chromium is missing at {CHROMIUM}: `apt-get install -y chromium` enables the browser tests."
)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("PORTAL_REQUIRE_BROWSER") == "1":
            pytest.fail(MISSING + " (PORTAL_REQUIRE_BROWSER=1 requires them.)", pytrace=False)
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(autouse=True)
def console_settings(settings):
    """A broker address of our choosing (tests/settings.py already serves plain static files)."""
    settings.MQTT_TLS_PORT = None
    settings.MQTT_HOST = "mqtt.example.com"
    settings.MQTT_PORT = 1883
    settings.LANGUAGE_CODE = "en"


@pytest.fixture
def context(browser, live_server, transactional_db):
    context = browser.new_context(base_url=live_server.url, locale="en-US",
                                  viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(5000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()
