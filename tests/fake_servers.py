"""Stand-ins for a broker that misbehaves, on real 127.0.0.1 sockets in threads of the test
process: a server that never answers, one that answers CONNECT but never acknowledges, TLS servers
with certificates from throw-away CAs. Plain helpers; the shared ``silent_server`` fixture is in
``tests/conftest.py``."""

import datetime
import ipaddress
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class SilentServer:
    """Accepts TCP connections (optionally completing a TLS handshake) and never answers."""

    def __init__(self, tls_context=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.tls_context = tls_context
        self.accepted = 0
        self.held = []
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._handle(conn)

    def _handle(self, conn):
        if self.tls_context is not None:
            try:
                conn.settimeout(5)
                conn = self.tls_context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        self.held.append(conn)  # keep it open, say nothing

    def close(self):
        self.stopped = True
        self.sock.close()
        for conn in self.held:
            conn.close()


class ConnackOnlyServer(SilentServer):
    """Answers any CONNECT with "accepted" (3.1.1 CONNACK 0x20 0x02 0x00 0x00), then reads and
    never acknowledges anything: a broker that stops answering after the handshake."""

    def _handle(self, conn):
        self.held.append(conn)
        threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn):
        try:
            conn.settimeout(10)
            conn.recv(4096)  # the CONNECT
            conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))
            while conn.recv(4096):  # the PUBLISH (and anything else): no PUBACK
                pass
        except OSError:
            pass


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_server_cert(ca, names, tmp_path, stem):
    """A server certificate for ``names`` (DNS names or IP addresses) signed by ``ca``."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{stem}.pem", tmp_path / f"{stem}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    return cert_file, key_file


def write_ca(ca, path):
    path.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return path
