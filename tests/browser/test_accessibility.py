"""The console audited with axe-core (WCAG 2.0/2.1 A and AA rules) in a real browser, and driven
by keyboard alone.

axe cannot judge everything (whether a label is *meaningful*, whether focus lands somewhere
sensible), so the keyboard test checks those by hand: the parameters panel is reachable and
usable with Tab and Enter, and every copy button says what it copies.
"""

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.pages import log_in

pytestmark = pytest.mark.browser

# WCAG 2.0/2.1 A and AA, plus 2.2 AA (touch target size) and axe's best practices (landmarks with
# unique names, heading order): the console passes them all, and keeping them on guards it.
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa",
                                          "best-practice"]},
    "resultTypes": ["violations"],
}
BLOCKING = {"serious", "critical"}


@pytest.fixture(scope="module")
def axe():
    return Axe()


class Audit:
    """Runs axe on each state of a page and keeps every finding, so one failing test lists all
    the pages at once instead of stopping at the first."""

    def __init__(self, axe, page):
        self.axe, self.page, self.findings = axe, page, []

    def __call__(self, where):
        violations = self.axe.run(self.page, options=AXE_OPTIONS).response["violations"]
        self.findings += [(where, violation) for violation in violations]

    def report(self, impacts):
        lines = []
        for where, violation in self.findings:
            if violation["impact"] in impacts:
                node = violation["nodes"][0]
                lines.append(f"{where}: {violation['id']} ({violation['impact']}) "
                             f"{violation['help']}; {len(violation['nodes'])} node(s), first "
                             f"{node['target']}: {node.get('failureSummary', '').strip()}")
        return "\n".join(lines)

    def assert_clean(self):
        # Moderate and minor findings are printed (pytest shows them with -s or on failure).
        print(self.report({"moderate", "minor"}))
        blocking = self.report(BLOCKING)
        assert not blocking, "serious or critical accessibility violations:\n" + blocking


def test_the_console_has_no_serious_violations(page, axe, owner, device):
    audit = Audit(axe, page)
    page.goto("/accounts/login/")
    audit("login page")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    audit("login page with an error")
    log_in(page, "alice", "alice-password")

    device_url = f"/products/{device.product.product_id}/devices/{device.device_id}/"
    for where, url in [
        ("products list", "/products/"),
        ("product page", f"/products/{device.product.product_id}/"),
        ("devices list", "/devices/"),
        ("device page", device_url),
        ("rotate-secret confirmation", device_url + "rotate/"),
        ("404 page", "/products/no-such-product/"),
    ]:
        page.goto(url)
        audit(where)

    page.goto(device_url)
    page.get_by_role("button", name="MQTT connection parameters").click()
    expect(page.locator("[data-param=mqttPassword]")).to_be_visible()
    page.get_by_text("Show the JSON").click()
    page.get_by_text("Inputs of the signature").click()
    audit("device page, parameters panel open (1280 px)")
    page.get_by_role("radio", name="TLS (securemode=2)").check()  # this deployment has no TLS listener: an option error
    expect(page.locator("[data-error-field=securemode]")).to_be_visible()
    audit("parameters panel, securemode error")
    page.get_by_label("Plain TCP").check()
    page.get_by_label("clientId", exact=True).fill("a|b")
    expect(page.locator("#err-clientId")).to_contain_text("must not contain")
    audit("parameters panel, clientId error")

    # A phone's width: tables and code blocks scroll inside themselves there.
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(device_url + "?panel=1")
    expect(page.locator("[data-param=mqttPassword]")).to_be_visible()
    audit("device page, parameters panel open (390 px)")
    for where, url in [("products list (390 px)", "/products/"),
                       ("devices list (390 px)", "/devices/")]:
        page.goto(url)
        audit(where)
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto(device_url + "debugger/")
    audit("signature debugger, empty")
    page.get_by_label("mqttClientId").fill(
        f"{device.device_id}|securemode=3,signmethod=hmacsha256|")
    page.get_by_label("mqttUsername").fill(f"{device.device_id}&{device.product.product_id}")
    page.get_by_label("mqttPassword").fill("0" * 64)
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#diagnosis-title")).to_have_text("What is wrong")
    audit("signature debugger with a result")
    page.set_viewport_size({"width": 390, "height": 800})  # its table of passwords scrolls
    audit("signature debugger with a result (390 px)")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto(device_url + "?panel=1")
    page.get_by_role("button", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_role("button", name="一键复制（JSON）")).to_be_visible()
    audit("device page in Chinese, panel open")
    page.goto("/devices/")
    audit("devices list in Chinese")

    audit.assert_clean()


def test_the_403_page_has_no_serious_violations(page, axe, member, device):
    audit = Audit(axe, page)
    log_in(page, "bob", "bob-password")
    page.goto(f"/products/{device.product.product_id}/devices/{device.device_id}/debugger/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    audit("403 page")
    page.goto(f"/products/{device.product.product_id}/devices/{device.device_id}/?panel=1")
    audit("device page of a member (password hidden)")
    audit.assert_clean()


def focused(page):
    """What a screen reader would announce for the focused element: role-ish tag and name."""
    return page.evaluate("""() => {
        const e = document.activeElement;
        return {tag: e.tagName.toLowerCase(), id: e.id,
                name: (e.getAttribute('aria-label') || e.textContent || '').trim(),
                inPanel: !!e.closest('#mqtt-params')};
    }""")


def tab_until(page, predicate, limit=60):
    for _ in range(limit):
        page.keyboard.press("Tab")
        if predicate(focused(page)):
            return focused(page)
    raise AssertionError(f"{limit} presses of Tab never reached it; last: {focused(page)}")


def test_the_parameters_panel_works_from_the_keyboard(page, owner, device):
    log_in(page, "alice", "alice-password")
    page.goto(f"/products/{device.product.product_id}/devices/{device.device_id}/")

    # The skip link comes first and leads to the content.
    page.keyboard.press("Tab")
    assert focused(page)["name"] == "Skip to content"

    tab_until(page, lambda f: f["id"] == "params-button")
    expect(page.locator("#params-button")).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")
    expect(page.locator("[data-param=mqttPassword]")).to_be_visible()
    expect(page.locator("#params-button")).to_have_attribute("aria-expanded", "true")
    # Focus is taken to the panel (named by its heading), so the next Tab starts inside it.
    expect(page.locator("#mqtt-params")).to_be_focused()
    expect(page.get_by_role("region", name="MQTT connection parameters")).to_be_visible()
    page.keyboard.press("Tab")
    assert focused(page)["inPanel"], focused(page)

    # The options are usable from the keyboard: type a clientId, the parameters follow.
    tab_until(page, lambda f: f["id"] == "opt-clientId")
    page.keyboard.type("AA-BB")
    expect(page.locator("[data-param=mqttClientId]")).to_contain_text("AA-BB|")
    expect(page.locator("#opt-clientId")).to_be_focused()  # the refresh leaves focus alone

    # Each copy button is reached by Tab and its name says what it copies.
    names = []
    for _ in range(40):
        page.keyboard.press("Tab")
        current = focused(page)
        if not current["inPanel"]:
            break
        if current["tag"] == "button" and current["name"].startswith("Copy"):
            names.append(current["name"])
    for field in ("Host", "Port", "mqttClientId", "mqttUsername", "mqttPassword"):
        assert f"Copy {field}" in names, names
    assert "Copy all (JSON)" in names, names
    assert "Copy mosquitto_pub (send one message)" in names, names
    assert len(names) == len(set(names)), names  # no two buttons share a name

    # Enter on a copy button copies and says so to screen readers.
    page.locator("[aria-label='Copy mqttUsername']").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("navigator.clipboard.readText()") == (
        f"{device.device_id}&{device.product.product_id}")
    expect(page.locator("#copy-status")).to_have_text("Copied")

    # Close (Enter on it) hides the panel and gives focus back to the button that opened it.
    page.locator("#params-close").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#mqtt-params")).to_be_hidden()
    expect(page.locator("#params-button")).to_be_focused()
    expect(page.locator("#params-button")).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")  # and it opens again, where it was
    expect(page.locator("#mqtt-params")).to_be_focused()
