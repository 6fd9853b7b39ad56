"""Login lock-out (console and admin), API token lock-out, and password reset only with mail."""

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core import mail
from django.core.management import call_command
from django.db.models import F
from django.test import override_settings

from accounts.models import PasswordResetRequest
from devices.models import ApiToken
from tests.test_settings import GOOD_FERNET, load_settings

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
API_URL = "/api/v1/products/a1B2c3D4e5F/devices/sensor-001/mqtt-params"
OTHER_ADDRESS = "10.9.8.7"
LIMIT = 10  # the default of PORTAL_LOGIN_FAILURE_LIMIT, as the issue asks
COOL_OFF = timedelta(minutes=15)  # the default of PORTAL_LOGIN_COOLOFF_MINUTES


def fail_logins(client, url, username, times, **extra):
    for _ in range(times):
        response = client.post(url, {"username": username, "password": "wrong"}, **extra)
    return response


def log_in(client, url, username, password, **extra):
    return client.post(url, {"username": username, "password": password, "next": "/devices/"},
                       **extra)


def pass_the_cool_off():
    """Time control: every recorded failure happened a cool-off period (and a second) earlier."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - COOL_OFF - timedelta(seconds=1))


def is_logged_in(response):
    return response.status_code == 302 and response["Location"] == "/devices/"


# -- console login --------------------------------------------------------------------------------

def test_nine_failures_still_let_the_right_password_in(client, owner):
    fail_logins(client, LOGIN, "alice", LIMIT - 1)
    assert is_logged_in(log_in(client, LOGIN, "alice", "alice-password"))


def test_ten_failures_lock_the_login_even_for_the_right_password(client, owner):
    tenth = fail_logins(client, LOGIN, "alice", LIMIT)
    assert tenth.status_code == 429
    response = log_in(client, LOGIN, "alice", "alice-password")
    assert response.status_code == 429
    body = response.content.decode()
    assert "Too many failed logins" in body and "even with the right password" in body
    assert re.search(r"Try again after \d\d:\d\d UTC \(in 15 minutes\)", body)
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert "_auth_user_id" not in client.session


def test_the_lock_out_page_speaks_chinese(client, owner):
    fail_logins(client, LOGIN, "alice", LIMIT)
    response = log_in(client, LOGIN, "alice", "alice-password", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429
    body = response.content.decode()
    assert "登录失败次数过多" in body and "即使密码正确" in body
    assert re.search(r"请在 \d\d:\d\d UTC 之后（15 分钟后）再试", body)


def test_a_locked_account_is_locked_from_every_address_but_other_accounts_are_not(
    client, owner, member
):
    fail_logins(client, LOGIN, "alice", LIMIT)
    from_elsewhere = log_in(client, LOGIN, "alice", "alice-password", REMOTE_ADDR=OTHER_ADDRESS)
    assert from_elsewhere.status_code == 429
    assert is_logged_in(log_in(client, LOGIN, "bob", "bob-password", REMOTE_ADDR=OTHER_ADDRESS))


def test_a_locked_address_is_locked_for_every_account_but_other_addresses_are_not(
    client, owner, member
):
    for number in range(LIMIT):  # a different (unknown) account each time: only the address adds up
        client.post(LOGIN, {"username": f"guess{number}", "password": "wrong"})
    assert log_in(client, LOGIN, "bob", "bob-password").status_code == 429
    assert is_logged_in(log_in(client, LOGIN, "bob", "bob-password", REMOTE_ADDR=OTHER_ADDRESS))


def test_after_the_cool_off_the_right_password_works_again(client, owner):
    fail_logins(client, LOGIN, "alice", LIMIT)
    assert log_in(client, LOGIN, "alice", "alice-password").status_code == 429
    pass_the_cool_off()
    assert is_logged_in(log_in(client, LOGIN, "alice", "alice-password"))


def test_tries_during_the_lock_out_do_not_extend_it(client, owner):
    fail_logins(client, LOGIN, "alice", LIMIT)
    pass_the_cool_off()
    # Only the recorded failures moved back; tries now would reset the clock if they counted.
    fail_logins(client, LOGIN, "alice", 1)
    assert AccessAttempt.objects.get().failures_since_start == 1


@override_settings(AXES_FAILURE_LIMIT=3)
def test_the_limit_comes_from_the_setting(client, owner):
    fail_logins(client, LOGIN, "alice", 3)
    assert log_in(client, LOGIN, "alice", "alice-password").status_code == 429


def test_the_reset_command_unlocks_an_account(client, owner):
    fail_logins(client, LOGIN, "alice", LIMIT)
    assert log_in(client, LOGIN, "alice", "alice-password").status_code == 429
    call_command("axes_reset_username", "alice")
    assert is_logged_in(log_in(client, LOGIN, "alice", "alice-password"))


def test_the_reset_command_unlocks_an_address(client, owner):
    for number in range(LIMIT):
        client.post(LOGIN, {"username": f"guess{number}", "password": "wrong"})
    assert log_in(client, LOGIN, "alice", "alice-password").status_code == 429
    call_command("axes_reset_ip", "127.0.0.1")
    assert is_logged_in(log_in(client, LOGIN, "alice", "alice-password"))


def test_an_administrator_unlocks_an_account_in_the_admin(client, member, admin_client):
    fail_logins(client, LOGIN, "bob", LIMIT, REMOTE_ADDR=OTHER_ADDRESS)
    assert log_in(client, LOGIN, "bob", "bob-password").status_code == 429
    listing = admin_client.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "bob" in listing.content.decode()
    attempt = AccessAttempt.objects.get(username="bob")
    deleted = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert is_logged_in(log_in(client, LOGIN, "bob", "bob-password"))


def test_no_password_is_stored_with_the_failures(client, owner):
    client.post(LOGIN, {"username": "alice", "password": "not-the-password-xyz"})
    attempt = AccessAttempt.objects.get()
    assert "not-the-password-xyz" not in attempt.post_data


# -- admin login ----------------------------------------------------------------------------------

def test_the_admin_login_locks_out_likewise(client, owner):
    fail_logins(client, ADMIN_LOGIN, "alice", LIMIT)
    response = client.post(ADMIN_LOGIN, {"username": "alice", "password": "alice-password",
                                         "next": "/admin/"})
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    pass_the_cool_off()
    response = client.post(ADMIN_LOGIN, {"username": "alice", "password": "alice-password",
                                         "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_console_and_admin_failures_add_up(client, owner):
    fail_logins(client, LOGIN, "alice", LIMIT // 2)
    fail_logins(client, ADMIN_LOGIN, "alice", LIMIT - LIMIT // 2)
    assert log_in(client, LOGIN, "alice", "alice-password").status_code == 429


# -- API tokens -----------------------------------------------------------------------------------

def test_ten_unknown_tokens_lock_the_address_out_of_the_api(client, owner, device):
    _record, token = ApiToken.issue(owner)
    for _ in range(LIMIT):
        response = client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token")
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    response = client.get(API_URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "too_many_failures" and error["field"] is None
    assert "Too many failed API tokens" in error["message"]
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert str(response["Retry-After"]) in error["message"]


def test_the_token_lock_out_speaks_chinese(client, owner, device):
    for _ in range(LIMIT):
        client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token")
    response = client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token",
                          HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429 and "API 令牌失败次数过多" in response.json()["error"]["message"]


def test_a_token_lock_out_spares_other_addresses_and_ends_after_the_cool_off(client, owner, device):
    _record, token = ApiToken.issue(owner)
    for _ in range(LIMIT):
        client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token")
    elsewhere = client.get(API_URL, HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=OTHER_ADDRESS)
    assert elsewhere.status_code == 200
    assert client.get(API_URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 429
    pass_the_cool_off()
    assert client.get(API_URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_token_failures_name_no_account_and_keep_no_token(client, owner, device):
    client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_secret-guess-123")
    attempt = AccessAttempt.objects.get()
    assert attempt.username is None and attempt.ip_address == "127.0.0.1"
    assert "secret-guess-123" not in attempt.get_data + attempt.post_data + attempt.http_accept
    # ...so they lock no account: alice still logs in from another address.
    for _ in range(LIMIT):
        client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token")
    assert is_logged_in(log_in(client, LOGIN, "alice", "alice-password", REMOTE_ADDR=OTHER_ADDRESS))


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_the_forwarded_address_is_the_one_judged(client, owner):
    forwarded = {"HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    for number in range(LIMIT):
        client.post(LOGIN, {"username": f"guess{number}", "password": "wrong"}, **forwarded)
    assert log_in(client, LOGIN, "alice", "alice-password", **forwarded).status_code == 429
    # Another client behind the same proxy (same REMOTE_ADDR) is not locked out.
    assert is_logged_in(log_in(client, LOGIN, "alice", "alice-password",
                               HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.9"))


@override_settings(TRUSTED_PROXY_COUNT=1)
@pytest.mark.parametrize("address", ["::ffff:203.0.113.5", "2001:DB8:0:0::7"])
def test_a_token_lock_out_holds_for_an_ipv6_address_in_any_spelling(client, owner, device,
                                                                    address):
    """A dual-stack proxy forwards IPv4 clients as ::ffff:a.b.c.d, which client_address writes
    as ::ffff:cb00:7105; the failures are stored in Django's spelling of the same address."""
    _record, token = ApiToken.issue(owner)
    forwarded = {"HTTP_X_FORWARDED_FOR": address}
    for _ in range(LIMIT):
        client.get(API_URL, HTTP_AUTHORIZATION="Bearer dpt_not-a-token", **forwarded)
    response = client.get(API_URL, HTTP_AUTHORIZATION=f"Bearer {token}", **forwarded)
    assert response.status_code == 429


# -- password reset -------------------------------------------------------------------------------

RESET_URLS = ["/accounts/password_reset/", "/accounts/password_reset/done/",
              "/accounts/reset/MQ/set-password/", "/accounts/reset/done/"]


@pytest.mark.parametrize("url", RESET_URLS)
def test_without_mail_the_reset_urls_are_not_found(client, db, url):
    assert client.get(url).status_code == 404
    assert client.post(url, {"email": "alice@example.com"}).status_code == 404


def test_without_mail_the_login_page_offers_no_reset(client, db):
    body = client.get(LOGIN).content.decode()
    assert "password_reset" not in body and "Forgotten your password" not in body


@pytest.fixture
def with_mail(settings):
    settings.PASSWORD_RESET_ENABLED = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "portal@example.com"
    settings.PASSWORD_RESET_PER_HOUR = 3


def test_with_mail_the_login_page_links_to_the_reset(client, db, with_mail):
    body = client.get(LOGIN).content.decode()
    assert 'href="/accounts/password_reset/"' in body and "Forgotten your password?" in body
    zh = client.get(LOGIN, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "忘记了您的密码" in zh


def test_with_mail_a_reset_mail_arrives_and_its_link_sets_a_new_password(
    client, owner, with_mail
):
    owner.email = "alice@example.com"
    owner.save(update_fields=["email"])
    response = client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password_reset/done/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form_url = client.get(link)["Location"]  # Django swaps the token for a session key
    done = client.post(form_url, {"new_password1": "a-new-long-password-42",
                                  "new_password2": "a-new-long-password-42"})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    assert is_logged_in(log_in(client, LOGIN, "alice", "a-new-long-password-42"))


def test_with_mail_resets_for_one_mail_address_are_throttled(client, owner, with_mail):
    owner.email = "alice@example.com"
    owner.save(update_fields=["email"])
    for number in range(3):
        response = client.post("/accounts/password_reset/", {"email": "alice@example.com"},
                               REMOTE_ADDR=f"10.0.0.{number + 1}")
        assert response.status_code == 302
    response = client.post("/accounts/password_reset/", {"email": "ALICE@example.com"},
                           REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 429 and 0 < int(response["Retry-After"]) <= 3600
    assert "No mail was sent" in response.content.decode()
    assert len(mail.outbox) == 3
    zh = client.post("/accounts/password_reset/", {"email": "alice@example.com"},
                     HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert zh.status_code == 429 and "未发送邮件" in zh.content.decode()
    # An hour later it is allowed again.
    PasswordResetRequest.objects.update(requested_at=F("requested_at") - timedelta(hours=1))
    response = client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    assert response.status_code == 302 and len(mail.outbox) == 4


def test_with_mail_resets_from_one_address_are_throttled(client, db, with_mail):
    for number in range(3):
        client.post("/accounts/password_reset/", {"email": f"someone{number}@example.com"})
    response = client.post("/accounts/password_reset/", {"email": "another@example.com"})
    assert response.status_code == 429
    other = client.post("/accounts/password_reset/", {"email": "another@example.com"},
                        REMOTE_ADDR=OTHER_ADDRESS)
    assert other.status_code == 302


def test_the_reset_table_keeps_no_mail_address(client, db, with_mail):
    client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    stored = PasswordResetRequest.objects.get()
    assert "alice" not in stored.email_digest and len(stored.email_digest) == 64


# -- settings -------------------------------------------------------------------------------------

KEYS = {"PORTAL_SECRET_KEY": "x" * 50, "PORTAL_SECRETS_KEY": GOOD_FERNET}


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
@pytest.mark.parametrize(("name", "value", "words"), [
    ("PORTAL_LOGIN_FAILURE_LIMIT", "ten", "PORTAL_LOGIN_FAILURE_LIMIT must be a whole number"),
    ("PORTAL_LOGIN_FAILURE_LIMIT", "0", "PORTAL_LOGIN_FAILURE_LIMIT must be at least 1"),
    ("PORTAL_LOGIN_FAILURE_LIMIT", "11", "PORTAL_LOGIN_FAILURE_LIMIT must be from 1 to 10"),
    ("PORTAL_LOGIN_COOLOFF_MINUTES", "-5", "PORTAL_LOGIN_COOLOFF_MINUTES must be at least 1"),
    ("PORTAL_TRUSTED_PROXY_COUNT", "one", "PORTAL_TRUSTED_PROXY_COUNT must be a whole number"),
    ("PORTAL_PASSWORD_RESET_PER_HOUR", "0", "PORTAL_PASSWORD_RESET_PER_HOUR must be at least 1"),
])
def test_a_bad_throttle_setting_is_named(tmp_path, name, value, words):
    code, output = load_settings(tmp_path, **KEYS, **{name: value})
    assert code != 0 and words in output


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
def test_a_mail_host_without_a_sender_is_refused(tmp_path):
    code, output = load_settings(tmp_path, **KEYS, PORTAL_EMAIL_HOST="smtp.example.com")
    assert code != 0 and "PORTAL_EMAIL_FROM must be the sender address" in output


@pytest.mark.broker  # a fresh interpreter: out of the quick lane
def test_a_mail_host_with_a_sender_starts(tmp_path):
    code, output = load_settings(tmp_path, **KEYS, PORTAL_EMAIL_HOST="smtp.example.com",
                                 PORTAL_EMAIL_FROM="portal@example.com")
    assert code == 0, output
