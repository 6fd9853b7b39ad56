"""One connection check: connect as the device, publish once at QoS 1, disconnect.

``run_connection_check`` takes plain values and returns a :class:`CheckResult`; it knows nothing
of tasks, models or requests, so it can be tested against a broker directly and reused by any
caller (the background task, a benchmark). Every failure becomes an outcome code with words a
person can act on; it never raises for a network problem.

Outcome codes are stable (they are stored and returned by the API); their titles and hints are
translated when shown.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .choices import CHECK_PROTOCOLS, DEFAULT_CHECK_PROTOCOL, Outcome, outcome_text

DEFAULT_STEP_TIMEOUT = 5.0  # seconds for each of: TCP+TLS connect, CONNACK, PUBACK

PROTOCOLS = dict(zip(CHECK_PROTOCOLS, (mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5), strict=True))
DEFAULT_PROTOCOL = DEFAULT_CHECK_PROTOCOL

# MQTT 3.1/3.1.1 CONNACK return codes and MQTT 5 reason codes -> outcome.
_CONNACK_V3 = {
    1: Outcome.REFUSED_PROTOCOL,
    2: Outcome.REFUSED_IDENTIFIER,
    3: Outcome.REFUSED_SERVER_UNAVAILABLE,
    4: Outcome.REFUSED_BAD_CREDENTIALS,
    5: Outcome.REFUSED_NOT_AUTHORIZED,
}
_CONNACK_V5 = {
    0x84: Outcome.REFUSED_PROTOCOL,
    0x85: Outcome.REFUSED_IDENTIFIER,
    0x88: Outcome.REFUSED_SERVER_UNAVAILABLE,
    0x89: Outcome.REFUSED_SERVER_UNAVAILABLE,  # server busy
    0x86: Outcome.REFUSED_BAD_CREDENTIALS,
    0x87: Outcome.REFUSED_NOT_AUTHORIZED,
    0x8A: Outcome.REFUSED_NOT_AUTHORIZED,  # banned
}

# OpenSSL verify codes (X509_V_ERR_*) that mean "hostname/IP does not match the certificate".
_HOSTNAME_MISMATCH_CODES = {62, 64}


def connack_outcome(code: int, protocol: str) -> str:
    if code == 0:
        return Outcome.ACCEPTED
    # A server that does not speak MQTT 5 answers a 5.0 CONNECT with a 3.1.1 CONNACK (code 1),
    # which the MQTT 5 specification allows: codes below 0x80 are read as 3.x return codes.
    table = _CONNACK_V5 if protocol == "5.0" and code >= 0x80 else _CONNACK_V3
    return table.get(code, Outcome.REFUSED_OTHER)


@dataclass
class CheckResult:
    outcome: str
    connack_code: int | None = None
    detail: str = ""  # technical detail (an exception's text, a PUBACK reason), English
    latencies: dict = field(default_factory=dict)  # step -> milliseconds

    @property
    def succeeded(self) -> bool:
        return self.outcome == Outcome.ACCEPTED

    @property
    def message(self) -> str:
        return outcome_text(self.outcome)[0]

    @property
    def hint(self) -> str:
        return outcome_text(self.outcome)[1]


class _TimedClient(mqtt.Client):
    """paho's client, instrumented: times the TCP and TLS steps and keeps the raw CONNACK code
    (paho does not pass it to ``on_connect`` when it refuses the protocol version itself)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_ms: dict[str, float] = {}
        self.raw_connack: int | None = None
        self.failed_step: str | None = None

    def _create_socket_connection(self):
        self.failed_step = "tcp"
        started = time.perf_counter()
        sock = super()._create_socket_connection()
        self.step_ms["tcp"] = _ms(started)
        return sock

    def _ssl_wrap_socket(self, tcp_sock):
        self.failed_step = "tls"
        started = time.perf_counter()
        sock = super()._ssl_wrap_socket(tcp_sock)
        self.step_ms["tls"] = _ms(started)
        self.failed_step = None
        return sock

    def _handle_connack(self):
        packet = self._in_packet["packet"]
        if len(packet) >= 2:
            self.raw_connack = packet[1]
        return super()._handle_connack()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _connect_failure(error: BaseException, step: str | None) -> tuple[str, str]:
    """Classify an exception raised while opening the TCP/TLS connection."""
    if isinstance(error, socket.gaierror):
        return Outcome.NAME_NOT_RESOLVED, str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        if error.verify_code in _HOSTNAME_MISMATCH_CODES:
            return Outcome.TLS_HOSTNAME_MISMATCH, error.verify_message or str(error)
        return Outcome.TLS_UNTRUSTED, error.verify_message or str(error)
    if isinstance(error, ssl.CertificateError):  # ssl.match_hostname on the paho path
        return Outcome.TLS_HOSTNAME_MISMATCH, str(error)
    if isinstance(error, ssl.SSLError):
        return Outcome.TLS_FAILED, str(error)
    if isinstance(error, ConnectionRefusedError):
        return Outcome.TCP_REFUSED, str(error)
    if isinstance(error, (TimeoutError, socket.timeout)):
        if step == "tls":
            return Outcome.TLS_FAILED, "TLS handshake timed out"
        return Outcome.TCP_TIMEOUT, str(error) or "timed out"
    if step == "tls" and isinstance(error, (ConnectionResetError, BrokenPipeError, EOFError)):
        return Outcome.TLS_FAILED, str(error) or type(error).__name__
    return Outcome.NETWORK_ERROR, f"{type(error).__name__}: {error}"


def run_connection_check(
    host: str,
    port: int,
    mqtt_client_id: str,
    username: str,
    password: str,
    *,
    topic: str,
    tls: bool = False,
    ca_file: str | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    timeout: float = DEFAULT_STEP_TIMEOUT,
    payload: bytes = b'{"portalCheck":true}',
) -> CheckResult:
    """Connect with these CONNECT fields, wait for CONNACK, publish one QoS 1 message to
    ``topic`` and wait for its PUBACK, then disconnect cleanly.

    ``timeout`` bounds each step (TCP+TLS connect, CONNACK, PUBACK), so a check never takes
    longer than about three times it. Latencies are in milliseconds: ``tcp`` (includes name
    resolution), ``tls``, ``connack`` (CONNECT sent → CONNACK), ``puback`` (PUBLISH → PUBACK),
    ``total``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
    started = time.perf_counter()
    version = PROTOCOLS[protocol]
    context = None
    if tls:
        try:
            context = ssl.create_default_context(cafile=ca_file) if ca_file else (
                ssl.create_default_context()
            )
        except (OSError, ssl.SSLError) as error:
            return CheckResult(
                Outcome.TLS_FAILED, detail=f"cannot load the CA certificate {ca_file}: {error}"
            )
    client = _TimedClient(
        CallbackAPIVersion.VERSION2,
        client_id=mqtt_client_id,
        protocol=version,
        clean_session=None if version == mqtt.MQTTv5 else True,
        reconnect_on_failure=False,
    )
    client.username_pw_set(username, password)
    if context is not None:
        client.tls_set_context(context)
    client.connect_timeout = timeout

    state = {"connack": None, "puback": None, "puback_reason": None, "closed": False}
    lock = threading.Lock()

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        with lock:
            state["connack"] = reason_code.value if hasattr(reason_code, "value") else reason_code

    def on_publish(_client, _userdata, mid, reason_code, _properties):
        with lock:
            state["puback"] = mid
            state["puback_reason"] = getattr(reason_code, "value", 0)

    def on_disconnect(_client, _userdata, _flags, reason_code, _properties):
        with lock:
            state["closed"] = True

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    latencies: dict[str, float] = {}

    def finish(outcome, detail="", connack_code=None):
        latencies.update(client.step_ms)
        latencies["total"] = _ms(started)
        try:
            client.disconnect()
            client.loop(timeout=0.05)
        except Exception:  # noqa: BLE001 - closing a broken socket may fail; nothing to do
            pass
        finally:
            try:
                client._sock_close()
            except Exception:  # noqa: BLE001
                pass
        return CheckResult(outcome, connack_code, detail, dict(latencies))

    try:
        client.connect(host, port, keepalive=max(10, int(timeout * 4)))
    except (OSError, ssl.SSLError, ssl.CertificateError) as error:
        outcome, detail = _connect_failure(error, client.failed_step)
        return finish(outcome, detail)

    # CONNECT has been written; wait for CONNACK.
    connect_sent = time.perf_counter()
    deadline = connect_sent + timeout
    while True:
        rc = client.loop(timeout=0.02)
        if client.raw_connack is not None or state["connack"] is not None:
            break
        if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) or state["closed"]:
            break
        if time.perf_counter() >= deadline:
            return finish(Outcome.NO_CONNACK, f"no CONNACK after {timeout:g} s")
    code = client.raw_connack if client.raw_connack is not None else state["connack"]
    if code is None:
        return finish(Outcome.CLOSED_BEFORE_CONNACK, "connection closed before CONNACK")
    latencies["connack"] = _ms(connect_sent)
    outcome = connack_outcome(code, protocol)
    if outcome != Outcome.ACCEPTED:
        return finish(outcome, f"CONNACK code {code}", connack_code=code)

    publish_sent = time.perf_counter()
    info = client.publish(topic, payload, qos=1)
    deadline = publish_sent + timeout
    while state["puback"] is None:
        rc = client.loop(timeout=0.02)
        if state["puback"] is not None:
            break
        if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) or state["closed"]:
            return finish(
                Outcome.CLOSED_BEFORE_PUBACK, "connection closed before PUBACK", connack_code=code
            )
        if time.perf_counter() >= deadline:
            return finish(Outcome.NO_PUBACK, f"no PUBACK after {timeout:g} s", connack_code=code)
    if state["puback"] != info.mid:
        return finish(Outcome.NO_PUBACK, "PUBACK for another message", connack_code=code)
    latencies["puback"] = _ms(publish_sent)
    if state["puback_reason"] and state["puback_reason"] >= 0x80:
        return finish(
            Outcome.PUBLISH_REFUSED, f"PUBACK reason {state['puback_reason']:#x}", connack_code=code
        )
    return finish(Outcome.ACCEPTED, connack_code=code)
