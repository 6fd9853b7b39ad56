"""run_connection_check against real sockets: each outcome comes from a real fault.

The servers (a port nothing listens on, a TCP server that never answers, TLS servers with
certificates from throw-away CAs) are in tests/fake_servers.py, shared with the other check tests.
"""

import ssl

import pytest
from django.utils import translation

from devices.connection_check import Outcome, connack_outcome, outcome_text, run_connection_check
from tests.broker_fixtures import free_port
from tests.fake_servers import ConnackOnlyServer, SilentServer, make_ca, make_server_cert, write_ca

TOPIC = "/a1B2c3D4e5F/sensor-001/user/portal-check"


def _fields(**overrides):
    values = dict(
        host="127.0.0.1", port=1, mqtt_client_id="c|securemode=3,signmethod=hmacsha256|",
        username="sensor-001&a1B2c3D4e5F", password="0" * 64, topic=TOPIC, timeout=1.0,
    )
    values.update(overrides)
    host, port = values.pop("host"), values.pop("port")
    client_id, username, password = (
        values.pop("mqtt_client_id"), values.pop("username"), values.pop("password")
    )
    return run_connection_check(host, port, client_id, username, password, **values)


# --- servers (tests/fake_servers.py) ----------------------------------------------------


@pytest.fixture
def connack_only_server():
    server = ConnackOnlyServer()
    yield server
    server.close()


@pytest.fixture
def throwaway_ca(tmp_path):
    ca = make_ca("Throw-away test CA")
    return ca, write_ca(ca, tmp_path / "throwaway-ca.pem")


@pytest.fixture
def tls_server_for(tmp_path, throwaway_ca):
    """Start a silent TLS server whose certificate names ``names``; returns (server, ca_file)."""
    servers = []

    def start(names):
        ca, ca_file = throwaway_ca
        cert_file, key_file = make_server_cert(ca, names, tmp_path, f"server{len(servers)}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server = SilentServer(tls_context=context)
        servers.append(server)
        return server, ca_file

    yield start
    for server in servers:
        server.close()


# --- outcomes from real faults ---------------------------------------------------------------


def test_a_closed_port_is_a_refused_tcp_connection():
    result = _fields(port=free_port())
    assert result.outcome == Outcome.TCP_REFUSED
    assert not result.succeeded
    assert result.connack_code is None
    assert "total" in result.latencies


def test_an_unresolvable_host_name_says_the_name_was_not_resolved():
    result = _fields(host="nonexistent.invalid", port=1883)
    assert result.outcome == Outcome.NAME_NOT_RESOLVED


def test_a_server_that_never_answers_gives_no_connack_within_the_timeout(silent_server):
    result = _fields(port=silent_server.port, timeout=0.5)
    assert result.outcome == Outcome.NO_CONNACK
    assert silent_server.accepted == 1
    assert 500 <= result.latencies["total"] < 2500
    assert "tcp" in result.latencies and "connack" not in result.latencies


def test_a_broker_that_accepts_but_never_acknowledges_gives_no_puback(connack_only_server):
    result = _fields(port=connack_only_server.port, timeout=0.5)
    assert result.outcome == Outcome.NO_PUBACK
    assert result.connack_code == 0
    assert "connack" in result.latencies and "puback" not in result.latencies
    assert 500 <= result.latencies["total"] < 2500


def test_a_certificate_from_another_ca_is_not_trusted(tls_server_for, tmp_path):
    server, _right_ca = tls_server_for(["127.0.0.1", "localhost"])
    wrong_ca = write_ca(make_ca("Some other CA"), tmp_path / "wrong-ca.pem")
    result = _fields(port=server.port, tls=True, ca_file=str(wrong_ca))
    assert result.outcome == Outcome.TLS_UNTRUSTED
    assert "tls" not in result.latencies  # the handshake did not complete


def test_a_certificate_for_another_name_is_a_hostname_mismatch(tls_server_for):
    server, ca_file = tls_server_for(["broker.example"])
    result = _fields(port=server.port, tls=True, ca_file=str(ca_file))
    assert result.outcome == Outcome.TLS_HOSTNAME_MISMATCH


def test_a_trusted_tls_server_that_never_answers_mqtt_gives_no_connack(tls_server_for):
    server, ca_file = tls_server_for(["127.0.0.1"])
    result = _fields(port=server.port, tls=True, ca_file=str(ca_file), timeout=0.5)
    assert result.outcome == Outcome.NO_CONNACK
    assert result.latencies["tls"] > 0


def test_an_unreadable_ca_file_is_a_tls_failure_not_an_exception(tls_server_for, tmp_path):
    server, _ca_file = tls_server_for(["127.0.0.1"])
    result = _fields(port=server.port, tls=True, ca_file=str(tmp_path / "missing-ca.pem"))
    assert result.outcome == Outcome.TLS_FAILED
    assert "missing-ca.pem" in result.detail


def test_plain_tls_to_a_port_that_speaks_no_tls_is_a_tls_failure(silent_server):
    result = _fields(port=silent_server.port, tls=True, timeout=0.5)
    assert result.outcome == Outcome.TLS_FAILED


def test_it_refuses_an_unknown_protocol_version():
    with pytest.raises(ValueError, match="protocol must be one of"):
        _fields(protocol="4.0")


# --- words ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, protocol, outcome",
    [
        (0, "3.1.1", Outcome.ACCEPTED),
        (1, "3.1.1", Outcome.REFUSED_PROTOCOL),
        (2, "3.1", Outcome.REFUSED_IDENTIFIER),
        (3, "3.1.1", Outcome.REFUSED_SERVER_UNAVAILABLE),
        (4, "3.1.1", Outcome.REFUSED_BAD_CREDENTIALS),
        (5, "3.1.1", Outcome.REFUSED_NOT_AUTHORIZED),
        (0x86, "5.0", Outcome.REFUSED_BAD_CREDENTIALS),
        (0x87, "5.0", Outcome.REFUSED_NOT_AUTHORIZED),
        (0x84, "5.0", Outcome.REFUSED_PROTOCOL),
        (0x85, "5.0", Outcome.REFUSED_IDENTIFIER),
        (0x88, "5.0", Outcome.REFUSED_SERVER_UNAVAILABLE),
        (0x99, "5.0", Outcome.REFUSED_OTHER),
        (1, "5.0", Outcome.REFUSED_PROTOCOL),  # a 3.1.1-only server answering a 5.0 CONNECT
    ],
)
def test_connack_codes_of_the_mqtt_specifications_map_to_outcomes(code, protocol, outcome):
    assert connack_outcome(code, protocol) == outcome


def test_outcomes_read_in_english_and_chinese():
    with translation.override("en"):
        message, hint = outcome_text(Outcome.TCP_REFUSED)
    assert message.startswith("TCP connection refused")
    assert "port" in hint
    with translation.override("zh-hans"):
        zh_message, zh_hint = outcome_text(Outcome.TCP_REFUSED)
    assert "TCP" in zh_message and zh_message != message
    assert zh_hint != hint
