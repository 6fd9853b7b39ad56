"""Development TLS material (devices/tls.py) and runbroker's argument checks."""

import ssl

import pytest
from cryptography import x509
from django.core.management import CommandError, call_command

from devices import tls


def test_the_development_certificates_are_made_once(tmp_path):
    files = tls.ensure_development_certificates(tmp_path / "tls")
    first = [p.read_bytes() for p in (files.ca_file, files.certfile, files.keyfile)]
    again = tls.ensure_development_certificates(tmp_path / "tls")
    assert [p.read_bytes() for p in (again.ca_file, again.certfile, again.keyfile)] == first
    assert files.keyfile.stat().st_mode & 0o077 == 0  # the private key is private


def test_the_server_certificate_names_127_0_0_1_and_localhost_and_chains_to_the_ca(tmp_path):
    files = tls.ensure_development_certificates(tmp_path)
    cert = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    # A client that trusts only the CA completes a verified handshake for each name.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certfile, files.keyfile)
    client = ssl.create_default_context(cafile=str(files.ca_file))
    for hostname in ("127.0.0.1", "localhost"):
        _handshake(server, client, hostname)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, "example.com")


def _handshake(server_context, client_context, hostname):
    """A TLS handshake in memory; raises as a real client would."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=hostname)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    done = set()
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if name in done:
                continue
            try:
                side.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        if done == {"client", "server"}:
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize(
    "arguments, message",
    [(["--tls-port", "18883", "--certfile", "a.pem"], "--certfile and --keyfile go together"),
     (["--tls-port", "18883", "--certfile", "/nonexistent.pem", "--keyfile", "/nonexistent.pem"],
      "--certfile: no file at /nonexistent.pem"),
     (["--port", "70000"], "--port must be a port number")],
)
def test_runbroker_explains_bad_arguments(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("runbroker", *arguments)
