"""The EMQX REST API settings (PORTAL_EMQX_API_*) fail loudly when they cannot work."""

import pytest

from tests.test_settings import GOOD_FERNET, load_settings

pytestmark = pytest.mark.broker  # each test starts a fresh interpreter: out of the quick lane

KEYS = {"PORTAL_SECRET_KEY": "x" * 50, "PORTAL_SECRETS_KEY": GOOD_FERNET}


def test_an_api_url_without_a_key_is_refused(tmp_path):
    code, output = load_settings(tmp_path, **KEYS, PORTAL_EMQX_API_URL="http://emqx:18083")
    assert code != 0
    assert "PORTAL_EMQX_API_KEY and PORTAL_EMQX_API_SECRET" in output


def test_an_api_url_that_is_no_http_url_is_named(tmp_path):
    code, output = load_settings(tmp_path, **KEYS, PORTAL_EMQX_API_URL="emqx:18083",
                                 PORTAL_EMQX_API_KEY="k", PORTAL_EMQX_API_SECRET="s")
    assert code != 0
    assert "PORTAL_EMQX_API_URL must start with http:// or https://" in output


def test_a_complete_api_setting_starts(tmp_path):
    code, output = load_settings(tmp_path, **KEYS, PORTAL_EMQX_API_URL="https://emqx:18083/",
                                 PORTAL_EMQX_API_KEY="k", PORTAL_EMQX_API_SECRET="s")
    assert code == 0, output
