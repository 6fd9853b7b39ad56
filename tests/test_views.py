"""Console pages: who sees what (owner, member without the secret permission, anonymous)."""

import html
import json
import re
import shlex

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import AuditEvent, Device, DeviceStatus, Product
from devices.options import ConnectionOptions

DEVICE_URL = "/products/a1B2c3D4e5F/devices/sensor-001/"
SECRET = "Xk9fPq2LmN7rT4vW8yZ1aB3cD5eF6gH0"


@pytest.fixture(autouse=True)
def broker_address(settings):
    """A broker address of our choosing (tests/settings.py already serves plain static files)."""
    settings.MQTT_TLS_PORT = None
    settings.MQTT_HOST = "mqtt.example.com"
    settings.MQTT_PORT = 1883


def data_params(response):
    """{key: text} of every element carrying data-param."""
    found = re.findall(r'data-param="([^"]+)"[^>]*>([^<]*)<', response.content.decode())
    return {key: html.unescape(value) for key, value in found}


def render_vector(vectors, name):
    return next(v for v in vectors["render"] if v["name"] == name)


# -- anonymous --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["/", "/products/", "/products/a1B2c3D4e5F/", "/devices/", DEVICE_URL,
     DEVICE_URL + "?panel=1", DEVICE_URL + "debugger/", DEVICE_URL + "rotate/", "/tls/ca.pem"],
)
def test_anonymous_visitors_are_sent_to_the_login_page(client, device, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_anonymous_posts_change_nothing(client, device):
    for url in ("secret/", "rotate/", "enabled/"):
        response = client.post(DEVICE_URL + url, {"enabled": "false"})
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    device.refresh_from_db()
    assert device.enabled and device.device_secret == SECRET
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "url", ["/products/", "/products/a1B2c3D4e5F/", "/devices/", DEVICE_URL,
            DEVICE_URL + "?panel=1", DEVICE_URL + "debugger/", DEVICE_URL + "rotate/"],
)
def test_an_account_without_the_view_permission_sees_no_device(client, outsider, device, url):
    client.force_login(outsider)
    response = client.get(url)
    body = html.unescape(response.content.decode())
    assert response.status_code == 403
    assert "Can view device" in body and "Lab sensor" not in body and "Thermometer" not in body
    assert client.post(DEVICE_URL + "secret/").status_code == 403


def test_the_login_page_logs_in_and_says_what_to_do_when_it_fails(client, owner, device):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="username"' in page.content
    bad = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert bad.status_code == 200
    assert b"case-sensitive" in bad.content
    good = client.post("/accounts/login/", {"username": "alice", "password": "alice-password",
                                            "next": DEVICE_URL})
    assert good.status_code == 302 and good["Location"] == DEVICE_URL


def test_logout_is_a_post_form(client, owner):
    client.force_login(owner)
    page = client.get("/devices/")
    assert re.search(rb'<form class="logout" action="/accounts/logout/" method="post">', page.content)
    client.post("/accounts/logout/")
    assert client.get("/devices/").status_code == 302


# -- device page ------------------------------------------------------------------------------


def test_the_device_page_shows_the_device_with_the_secret_masked(client, owner, device):
    client.force_login(owner)
    response = client.get(DEVICE_URL)
    body = response.content.decode()
    assert response.status_code == 200
    assert "a1B2c3D4e5F" in body and "sensor-001" in body and "Lab sensor" in body
    assert 'data-status="inactive"' in body
    assert SECRET not in body
    assert "gH0" in body  # the masked secret ends with its last characters
    assert "MQTT connection parameters" in body
    assert 'action="/products/a1B2c3D4e5F/devices/sensor-001/secret/"' in body
    assert "/debugger/" in body
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_a_disabled_device_shows_a_disabled_badge(client, owner, device):
    device.set_enabled(False)
    client.force_login(owner)
    assert b'data-status="disabled"' in client.get(DEVICE_URL).content


def test_an_unknown_device_is_404(client, owner, device):
    client.force_login(owner)
    assert client.get("/products/a1B2c3D4e5F/devices/nope/").status_code == 404
    assert client.get("/products/nope/devices/sensor-001/").status_code == 404


def test_revealing_the_secret_shows_it_and_is_audited(client, owner, device):
    client.force_login(owner)
    response = client.post(DEVICE_URL + "secret/")
    assert response.status_code == 200
    assert SECRET in response.content.decode()
    event = AuditEvent.objects.get()
    assert event.action == AuditEvent.Action.REVEAL_SECRET
    assert event.actor == owner and event.targets == ["a1B2c3D4e5F/sensor-001"]


def test_switching_language_after_a_reveal_goes_back_to_the_device_page(client, owner, device):
    client.force_login(owner)
    body = client.post(DEVICE_URL + "secret/").content.decode()
    assert f'name="next" value="{DEVICE_URL}"' in body


def test_the_secret_cannot_be_revealed_with_a_get(client, owner, device):
    client.force_login(owner)
    assert client.get(DEVICE_URL + "secret/").status_code == 405
    assert not AuditEvent.objects.exists()


def test_a_member_sees_the_device_but_not_the_secret(client, member, device):
    client.force_login(member)
    body = client.get(DEVICE_URL).content.decode()
    assert "sensor-001" in body and SECRET not in body
    assert SECRET[-3:] not in body  # not even the masked form's last characters
    assert "/secret/" not in body and "/debugger/" not in body and "/rotate/" not in body
    assert client.post(DEVICE_URL + "secret/").status_code == 403
    assert not AuditEvent.objects.exists()


# -- the parameters panel ---------------------------------------------------------------------


def test_the_panel_gives_the_vectors_parameters(client, owner, device, vectors):
    v = render_vector(vectors, "hmacsha256, no timestamp")  # the fixture device is this vector's
    client.force_login(owner)
    response = client.get(DEVICE_URL, {"panel": "1", "securemode": "3", "signmethod": "hmacsha256",
                                       "timestamp": "none", "clientId": v["clientId"]})
    params = data_params(response)
    assert params["mqttPassword"] == v["mqttPassword"]
    assert params["mqttClientId"] == v["mqttClientId"]
    assert params["mqttUsername"] == v["mqttUsername"]
    assert params["host"] == "mqtt.example.com" and params["port"] == "1883"


def test_every_data_param_equals_the_json_endpoint(client, owner, device):
    client.force_login(owner)
    query = {"securemode": "3", "signmethod": "hmacmd5", "timestamp": "1700000000000",
             "clientId": "AA:BB", "exclusive": "true"}
    answer = client.get("/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params", query).json()
    params = data_params(client.get(DEVICE_URL, query))
    assert set(params) == set(answer)
    for key, value in answer.items():
        expected = ("true" if value else "false") if isinstance(value, bool) else str(value)
        assert params[key] == expected, key


def test_the_panel_works_as_a_plain_get_form(client, owner, device):
    client.force_login(owner)
    closed = client.get(DEVICE_URL).content.decode()
    assert "data-param" not in closed
    assert re.search(r'<form method="get" action="#mqtt-params"[^>]*>\s*<input type="hidden" '
                     r'name="panel" value="1">', closed)
    opened = client.get(DEVICE_URL, {"panel": "1"}).content.decode()
    assert 'id="params-options"' in opened and 'data-param="mqttPassword"' in opened
    for name in ("securemode", "signmethod", "timestamp", "clientId", "exclusive"):
        assert f'name="{name}"' in opened


def test_the_panel_fragment_is_the_panel_alone(client, owner, device):
    client.force_login(owner)
    body = client.get(DEVICE_URL, {"panel": "1", "fragment": "panel"}).content.decode()
    assert body.strip().startswith('<section id="mqtt-params"')
    assert "<html" not in body


def test_a_bad_clientid_is_explained_beside_the_field(client, owner, device):
    client.force_login(owner)
    body = client.get(DEVICE_URL, {"panel": "1", "clientId": "mac|01"}).content.decode()
    slot = re.search(r'data-error-for="clientId"[^>]*>([^<]*)<', body).group(1)
    assert "clientId must not contain" in html.unescape(slot) and "'|'" in html.unescape(slot)
    assert 'aria-invalid="true"' in body
    assert "data-param" not in body
    long = client.get(DEVICE_URL, {"panel": "1", "clientId": "x" * 65}).content.decode()
    assert "at most 64 characters" in long


def test_tls_without_a_tls_listener_is_explained(client, owner, device):
    client.force_login(owner)
    body = client.get(DEVICE_URL, {"panel": "1", "securemode": "2"}).content.decode()
    slot = re.search(r'data-error-for="securemode"[^>]*>([^<]*)<', body).group(1)
    assert "securemode=3" in slot


def test_option_errors_are_explained_in_chinese(client, owner, device):
    client.force_login(owner)
    zh = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9"}
    expected = [
        ({"clientId": "mac|01"}, "clientId", "clientId 不能包含"),
        ({"clientId": "x" * 65}, "clientId", "最多 64 个字符（现在有 65 个）"),
        ({"securemode": "2"}, "securemode", "没有 TLS 监听端口"),
        ({"timestamp": "yesterday"}, "timestamp", "毫秒时间"),
        ({"exclusive": "maybe"}, "exclusive", "true 或 false"),
        ({"signmethod": "sha512"}, "signmethod", "signmethod 必须是"),
    ]
    for query, field, words in expected:
        body = client.get(DEVICE_URL, {"panel": "1", **query}, **zh).content.decode()
        slot = html.unescape(
            re.search(rf'data-error-for="{field}"[^>]*>([^<]*)<', body).group(1))
        assert words in slot, (query, slot)


def test_a_bad_timestamp_is_explained(client, owner, device):
    client.force_login(owner)
    body = client.get(DEVICE_URL, {"panel": "1", "timestamp": "yesterday"}).content.decode()
    assert "digits only" in re.search(r'data-error-for="timestamp"[^>]*>([^<]*)<', body).group(1)


def test_copy_all_is_json_in_alibabas_shape(client, owner, device):
    client.force_login(owner)
    response = client.get(DEVICE_URL, {"panel": "1", "securemode": "3", "timestamp": "789"})
    params = data_params(response)
    text = re.search(r'<pre class="mono" id="copy-all-json">([^<]*)</pre>',
                     response.content.decode()).group(1)
    copied = json.loads(html.unescape(text))
    assert copied == {
        "clientId": params["mqttClientId"],
        "username": params["mqttUsername"],
        "mqttHostUrl": "mqtt.example.com",
        "passwd": params["mqttPassword"],
        "port": 1883,
    }


def snippet(response, name):
    text = re.search(rf'data-snippet="{name}"[^>]*>([^<]*)</pre>', response.content.decode()).group(1)
    return html.unescape(text)


def test_shell_snippets_survive_the_shell(client, owner, device):
    client.force_login(owner)
    response = client.get(DEVICE_URL, {"panel": "1", "securemode": "3", "timestamp": "789"})
    params = data_params(response)
    for name, program in (("mosquitto-sub", "mosquitto_sub"), ("mosquitto-pub", "mosquitto_pub"),
                          ("mqttx", "mqttx")):
        words = shlex.split(snippet(response, name))  # what a POSIX shell would pass on
        assert words[0] == program
        assert words[words.index("-i") + 1] == params["mqttClientId"]  # with its | intact
        assert words[words.index("-u") + 1] == params["mqttUsername"]  # with its & intact
        assert words[words.index("-P") + 1] == params["mqttPassword"]
        assert words[words.index("-h") + 1] == "mqtt.example.com"
        assert words[words.index("-p") + 1] == "1883"
        assert "--cafile" not in words
    assert "mqttv311" in shlex.split(snippet(response, "mosquitto-sub"))


def test_the_python_snippet_is_valid_paho_2_code(client, owner, device):
    import ast

    client.force_login(owner)
    response = client.get(DEVICE_URL, {"panel": "1", "securemode": "3", "timestamp": "789"})
    params = data_params(response)
    tree = ast.parse(snippet(response, "python"))
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert {params["mqttClientId"], params["mqttUsername"], params["mqttPassword"]} <= strings
    assert "CallbackAPIVersion.VERSION2" in snippet(response, "python")


def test_tls_snippets_use_the_ca_file_and_the_ca_can_be_downloaded(client, owner, device,
                                                                    settings, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings.MQTT_TLS_PORT = 8883
    settings.MQTT_CA_FILE = str(ca)
    client.force_login(owner)
    response = client.get(DEVICE_URL, {"panel": "1"})
    assert data_params(response)["securemode"] == "2"
    assert data_params(response)["port"] == "8883"
    words = shlex.split(snippet(response, "mosquitto-sub"))
    assert words[words.index("--cafile") + 1] == "ca.pem"
    assert 'tls_set(ca_certs="ca.pem")' in snippet(response, "python")
    assert "--ca" in shlex.split(snippet(response, "mqttx"))
    assert b'href="/tls/ca.pem"' in response.content
    download = client.get("/tls/ca.pem")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == ca.read_bytes()


def test_without_a_ca_file_there_is_nothing_to_download(client, owner, device, settings, tmp_path):
    settings.MQTT_CA_FILE = str(tmp_path / "missing.pem")
    client.force_login(owner)
    assert client.get("/tls/ca.pem").status_code == 404


def test_a_members_panel_has_no_password_and_says_why(client, member, device):
    client.force_login(member)
    response = client.get(DEVICE_URL, {"panel": "1", "securemode": "3", "timestamp": "789"})
    params = data_params(response)
    assert {"host", "port", "mqttClientId", "mqttUsername"} <= set(params)
    assert "mqttPassword" not in params
    body = response.content.decode()
    assert 'id="password-hidden-note"' in body and "Can view device secrets" in body
    assert "copy-all-json" not in body and "data-snippet" not in body
    # the password the owner would see is nowhere in the page
    owner_view = device.connection_params(
        ConnectionOptions.from_query({"securemode": "3", "timestamp": "789"}))
    assert owner_view["mqttPassword"] not in body


# -- rotate and enable ------------------------------------------------------------------------


def test_rotating_asks_first_then_rotates_and_says_what_follows(client, owner, device):
    client.force_login(owner)
    confirm = client.get(DEVICE_URL + "rotate/")
    assert confirm.status_code == 200 and b"refuses the device until" in confirm.content
    device.refresh_from_db()
    assert device.device_secret == SECRET  # asking changes nothing
    done = client.post(DEVICE_URL + "rotate/", follow=True)
    device.refresh_from_db()
    assert device.device_secret != SECRET
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ROTATE_SECRET).count() == 1
    assert b"until it is given the new secret" in done.content


def test_a_member_can_neither_rotate_nor_disable(client, member, device):
    client.force_login(member)
    assert client.get(DEVICE_URL + "rotate/").status_code == 403
    assert client.post(DEVICE_URL + "rotate/").status_code == 403
    assert client.post(DEVICE_URL + "enabled/", {"enabled": "false"}).status_code == 403
    device.refresh_from_db()
    assert device.device_secret == SECRET and device.enabled


def test_disable_and_enable(client, owner, device):
    client.force_login(owner)
    client.post(DEVICE_URL + "enabled/", {"enabled": "false"})
    device.refresh_from_db()
    assert device.enabled is False
    page = client.get(DEVICE_URL).content.decode()
    assert 'name="enabled" value="true"' in page
    client.post(DEVICE_URL + "enabled/", {"enabled": "true"})
    device.refresh_from_db()
    assert device.enabled is True


def test_a_disabled_devices_check_panel_says_the_check_will_fail(client, owner, device):
    client.force_login(owner)
    assert 'id="check-disabled-warning"' not in client.get(DEVICE_URL).content.decode()
    client.post(DEVICE_URL + "enabled/", {"enabled": "false"})
    page = client.get(DEVICE_URL, HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    warning = re.search(r'id="check-disabled-warning"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert "该设备已禁用" in warning and "请先启用设备" in warning


def test_the_check_history_and_its_script_texts_are_in_chinese(client, owner, device):
    client.force_login(owner)
    page = client.get(DEVICE_URL, HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert '<th scope="col">排队时间</th>' in page  # when it was queued, not "排队中" (queuing)
    for name, text in [("status-queued", "排队中"), ("status-running", "运行中"),
                       ("detail", "技术细节：")]:
        assert f'data-text-{name}="{text}"' in page


def test_the_admin_is_named_for_the_portal_and_keeps_status_badges_on_one_line(owner_client, device):
    page = owner_client.get("/admin/devices/device/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert "设备门户管理后台" in page and "Django 管理" not in page
    # The status badge broke one character a line ("未/激/活") in the narrow column.
    assert "td.field-status_badge span { white-space: nowrap; }" in page
    assert 'class="field-status_badge"' in page


# -- lists ------------------------------------------------------------------------------------


@pytest.fixture
def many_devices(product):
    other = Product.objects.create(product_id="other", name="Other")
    devices = [Device(product=product, device_id=f"dev-{i:03d}", name=f"Kitchen {i}",
                      device_secret="s", status=DeviceStatus.ONLINE if i % 3 == 0 else
                      DeviceStatus.INACTIVE, enabled=i % 10 != 0) for i in range(120)]
    devices.append(Device(product=other, device_id="gateway", name="Roof", device_secret="s",
                          status=DeviceStatus.OFFLINE))
    Device.objects.bulk_create(devices)
    return product


def test_the_device_list_pages_without_counting_everything(client, owner, many_devices):
    client.force_login(owner)
    with CaptureQueriesContext(connection) as queries:
        first = client.get("/devices/")
    sql = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "COUNT(" not in sql
    assert len(queries.captured_queries) <= 8  # no query per row
    body = first.content.decode()
    assert body.count('href="/products/a1B2c3D4e5F/devices/dev-') == 50
    assert 'rel="next"' in body and 'rel="prev"' not in body
    third = client.get("/devices/", {"page": "3"}).content.decode()
    assert "gateway" in third and 'rel="next"' not in third


def test_the_device_list_searches_and_filters(client, owner, many_devices):
    client.force_login(owner)
    body = client.get("/devices/", {"q": "dev-01"}).content.decode()
    assert "dev-010" in body and "dev-019" in body and "dev-020" not in body
    body = client.get("/devices/", {"q": "roof"}).content.decode()
    assert "gateway" in body and "dev-001" not in body
    body = client.get("/devices/", {"product": "other"}).content.decode()
    assert "gateway" in body and "dev-001" not in body
    body = client.get("/devices/", {"status": "offline"}).content.decode()
    assert "gateway" in body and "dev-001" not in body
    body = client.get("/devices/", {"enabled": "no", "product": "a1B2c3D4e5F"}).content.decode()
    assert body.count('href="/products/a1B2c3D4e5F/devices/dev-') == 12
    assert "No device matches" in client.get("/devices/", {"q": "zzz"}).content.decode()


def test_bad_filters_say_what_is_allowed(client, owner, many_devices):
    client.force_login(owner)
    response = client.get("/devices/", {"status": "sleeping", "page": "x"})
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content


def test_the_product_list_counts_devices_by_status(client, owner, many_devices):
    client.force_login(owner)
    with CaptureQueriesContext(connection) as queries:
        body = client.get("/products/").content.decode()
    # session, user, the user's permissions (2), products, counts (2): none per product
    assert len(queries.captured_queries) <= 7
    row = body[body.index('href="/products/a1B2c3D4e5F/"'):body.index('href="/products/other/"')]
    cells = re.findall(r'data-count="(\w+)">(\d+)<', row)
    assert dict(cells) == {"inactive": "80", "online": "40", "offline": "0"}
    assert "<td class=\"num\">120</td>" in row and "<td class=\"num\">12</td>" in row


def test_the_product_page_lists_its_devices(client, member, many_devices):
    client.force_login(member)
    body = client.get("/products/a1B2c3D4e5F/", {"status": "online"}).content.decode()
    assert "Thermometer" in body and "dev-003" in body and "dev-001" not in body
    assert "gateway" not in body
    assert client.get("/products/missing/").status_code == 404


# -- debugger ---------------------------------------------------------------------------------


def test_the_debugger_needs_the_secret_permission(client, member, device):
    client.force_login(member)
    assert client.get(DEVICE_URL + "debugger/").status_code == 403
    assert client.post(DEVICE_URL + "debugger/", {"mqtt_client_id": "x|securemode=3|"}
                       ).status_code == 403


def test_the_debugger_explains_a_planted_mistake_without_showing_the_secret(client, owner, device,
                                                                           vectors):
    v = render_vector(vectors, "hmacmd5 over TLS")  # same device and secret as the fixture
    client.force_login(owner)
    response = client.post(DEVICE_URL + "debugger/", {
        "mqtt_client_id": v["mqttClientId"].replace("timestamp=1700000000000",
                                                    "timestamp=1700000000001"),
        "mqtt_username": v["mqttUsername"],
        "mqtt_password": v["mqttPassword"],
    })
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-code="timestamp_differs"' in body
    assert "1700000000000" in body
    assert SECRET not in body
    assert v["content"].replace("1700000000000", "1700000000001") in body  # canonical content


def test_a_pasted_password_is_hidden_from_error_reports(client, owner, device):
    from django.views.debug import SafeExceptionReporterFilter

    client.force_login(owner)
    response = client.post(DEVICE_URL + "debugger/", {
        "mqtt_client_id": "sensor-001|securemode=3|", "mqtt_password": "a1b2c3d4"})
    reported = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert reported["mqtt_client_id"] == "sensor-001|securemode=3|"
    assert reported["mqtt_password"] != "a1b2c3d4" and set(reported["mqtt_password"]) == {"*"}


def test_the_debugger_accepts_right_fields(client, owner, device, vectors):
    v = render_vector(vectors, "hmacmd5 over TLS")
    client.force_login(owner)
    body = client.post(DEVICE_URL + "debugger/", {
        "mqtt_client_id": v["mqttClientId"], "mqtt_username": v["mqttUsername"],
        "mqtt_password": v["mqttPassword"]}).content.decode()
    assert 'data-code="accepted"' in body and 'class="matched"' in body


def test_a_missing_trailing_pipe_is_not_headed_accepted(client, owner, device, vectors):
    """The broker refuses an mqttClientId without its closing '|' even when the password is
    right, so the page must lead with the problem, not "Accepted" (seen in a walk-through)."""
    v = render_vector(vectors, "hmacmd5 over TLS")
    client.force_login(owner)
    body = client.post(DEVICE_URL + "debugger/", {
        "mqtt_client_id": v["mqttClientId"][:-1], "mqtt_username": v["mqttUsername"],
        "mqtt_password": v["mqttPassword"]}, HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    heading = re.search(r'<h2 id="diagnosis-title">(.*?)</h2>', body).group(1)
    assert heading == "问题所在"
    assert 'data-code="missing_trailing_pipe"' in body
    assert "改正上面的问题后" in body and "代理服务器会接受这些字段" not in body


def test_a_finding_about_the_signed_content_names_the_field_in_the_readers_language(
        client, owner, device, vectors):
    from devices.signing import sign

    v = render_vector(vectors, "hmacmd5 over TLS")
    wrong_content = v["content"].lower()  # the planted mistake: the device signed in lowercase
    client.force_login(owner)
    body = client.post(DEVICE_URL + "debugger/", {
        "mqtt_client_id": v["mqttClientId"], "mqtt_username": v["mqttUsername"],
        "mqtt_password": sign(SECRET, wrong_content, "hmacmd5"), "content": wrong_content},
        HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    chips = re.findall(r'<span class="finding-field[^"]*">([^<]*)</span>', body)
    assert "content" not in chips and "设备签名的内容" in chips


def test_the_debugger_asks_for_the_mqttclientid(client, owner, device):
    client.force_login(owner)
    response = client.post(DEVICE_URL + "debugger/", {"mqtt_client_id": ""})
    assert response.status_code == 200 and b"This field is required" in response.content


# -- languages --------------------------------------------------------------------------------


def test_the_language_follows_the_browser(client, owner, device):
    client.force_login(owner)
    body = client.get(DEVICE_URL, HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert "MQTT连接参数" in body and '<html lang="zh-hans">' in body
    body = client.get(DEVICE_URL, HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert "MQTT connection parameters" in body


def test_the_switcher_sets_the_language(client, owner, device):
    client.force_login(owner)
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": DEVICE_URL})
    assert response.status_code == 302 and response["Location"] == DEVICE_URL
    body = client.get(DEVICE_URL, {"panel": "1"}).content.decode()
    assert "MQTT连接参数" in body and "一键复制（JSON）" in body


# -- error pages ------------------------------------------------------------------------------


def test_a_missing_device_says_what_to_do_and_links_back(client, owner, device):
    client.force_login(owner)
    response = client.get("/products/a1B2c3D4e5F/devices/nope/", HTTP_ACCEPT_LANGUAGE="zh-CN")
    body = response.content.decode()
    assert response.status_code == 404
    assert "此地址下没有内容" in body and 'href="/"' in body and "deviceId" in body
    assert "Resolver404" not in client.get("/no/such/page/").content.decode()


def test_a_refusal_names_the_permission_and_links_back(client, member, device):
    client.force_login(member)
    response = client.get(DEVICE_URL + "debugger/")
    body = html.unescape(response.content.decode())
    assert response.status_code == 403
    assert "it needs the permission to view device secrets" in body
    assert "Ask an administrator" in body and 'href="/"' in body


def test_an_expired_form_says_to_reload_and_links_back(owner, device):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    response = strict.post(DEVICE_URL + "enabled/", {"enabled": "false"},
                           HTTP_ACCEPT_LANGUAGE="zh-CN")
    body = response.content.decode()
    assert response.status_code == 403
    assert "重新加载" in body and 'href="/"' in body
    device.refresh_from_db()
    assert device.enabled
