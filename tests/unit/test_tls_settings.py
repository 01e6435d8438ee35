"""hydra.tls and hydra.coordinator.tls: the one-line messages (from details grpcio
1.85 really gives), settings from flags and variables, loopback, and the
certificate files that keep the last good configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hydra.coordinator.tls import (
    CertificateFiles,
    InsecureListen,
    ServerTls,
    check_listen,
    is_loopback,
    load_configuration,
)
from hydra.errors import InvalidArgument
from hydra.tls import ClientTls, client_tls, connection_problem

from support.certs import make_certs

TARGET = "10.0.0.1:7070"
LAST = "failed to connect to all addresses; last error: "
#: Details of failed connections, as grpcio 1.85 gives them.
CLOSED = LAST + "UNAVAILABLE: ipv4:10.0.0.1:7070: Socket closed"
HANDSHAKE = LAST + "UNKNOWN: ipv4:10.0.0.1:7070: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
WRONG_VERSION = (
    HANDSHAKE
    + "SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:"
    + ("WRONG_VERSION_NUMBER: Invalid certificate verification context: OK")
)
UNTRUSTED = (
    HANDSHAKE
    + "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
    + ("CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK")
)
EXPIRED = UNTRUSTED.replace("unable to get local issuer certificate", "certificate has expired")
MISMATCH = LAST + (
    "UNKNOWN: ipv4:10.0.0.1:7070: Custom verification check failed with error: "
    "UNAUTHENTICATED: Hostname Verification Check failed."
)
REFUSED = LAST + "UNAVAILABLE: ipv4:10.0.0.1:7070: Connection refused"

CA = ClientTls(ca=Path("ca.pem"))
MUTUAL = ClientTls(ca=Path("ca.pem"), cert=Path("me.pem"), key=Path("me.key"))


@pytest.mark.parametrize(
    ("details", "tls", "expected"),
    [
        (CLOSED, None, f"{TARGET} closed the connection during setup: it probably serves TLS"),
        (WRONG_VERSION, CA, f"{TARGET} does not speak TLS"),
        (UNTRUSTED, CA, f"the certificate of {TARGET} is not signed by the CA in ca.pem"),
        (UNTRUSTED, ClientTls(), "is not signed by the system's CAs"),
        (EXPIRED, CA, f"the certificate of {TARGET} has expired"),
        (MISMATCH, CA, "is not for '10.0.0.1'"),
        (MISMATCH, ClientTls(ca=Path("ca.pem"), server_name="hydra"), "is not for 'hydra'"),
        (CLOSED, CA, f"{TARGET} requires a client certificate (mTLS)"),
        (CLOSED, MUTUAL, f"{TARGET} refused the client certificate me.pem"),
    ],
)
def test_each_failure_has_its_line(details: str, tls: ClientTls | None, expected: str) -> None:
    line = connection_problem(TARGET, details, tls)
    assert line is not None and expected in line
    assert "\n" not in line


@pytest.mark.parametrize("tls", [None, CA])
def test_other_failures_are_not_tls_problems(tls: ClientTls | None) -> None:
    assert connection_problem(TARGET, REFUSED, tls) is None


def test_client_certificate_needs_its_key() -> None:
    with pytest.raises(InvalidArgument, match="--tls-key"):
        ClientTls(cert=Path("me.pem"))


def test_flags_fall_back_to_variables_one_by_one() -> None:
    environ = {"HYDRA_TLS_CA": "/env/ca.pem", "HYDRA_TLS_SERVER_NAME": "hydra"}
    tls = client_tls(cert=Path("me.pem"), key=Path("me.key"), environ=environ)
    assert tls == ClientTls(
        ca=Path("/env/ca.pem"), cert=Path("me.pem"), key=Path("me.key"), server_name="hydra"
    )
    assert client_tls(environ={}) is None
    assert client_tls(environ={"HYDRA_TLS": "1"}) == ClientTls()
    assert client_tls(system_store=True, environ={}) == ClientTls()
    with pytest.raises(ValueError, match="HYDRA_TLS must be 1 or 0"):
        client_tls(environ={"HYDRA_TLS": "maybe"})


def test_an_unreadable_file_names_its_flag(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="--tls-ca: cannot read"):
        ClientTls(ca=tmp_path / "nope.pem").credentials()


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:7070", True),
        ("127.3.2.1:7070", True),
        ("[::1]:7070", True),
        ("localhost:7070", True),
        ("0.0.0.0:7070", False),
        ("[::]:7070", False),
        (":7070", False),
        ("10.1.2.3:7070", False),
        ("hydra.example:7070", False),
    ],
)
def test_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_plaintext_beyond_loopback_needs_insecure(tmp_path: Path) -> None:
    with pytest.raises(InsecureListen, match=r"add --tls-cert and --tls-key .* or --insecure"):
        check_listen("0.0.0.0:7070", tls=None, insecure=False)
    check_listen("0.0.0.0:7070", tls=None, insecure=True)
    check_listen("127.0.0.1:7070", tls=None, insecure=False)
    certs = make_certs(tmp_path)
    check_listen("0.0.0.0:7070", tls=certs.server_tls(), insecure=False)


def test_files_that_do_not_load_keep_the_last_good(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert.write_bytes(certs.server.cert.read_bytes())
    key.write_bytes(certs.server.key.read_bytes())
    files = CertificateFiles(ServerTls(cert=cert, key=key))
    assert files.fetch() is None  # unchanged
    _rewrite(key, certs.client.key.read_bytes())  # the new key, before its certificate
    assert files.fetch() is None
    assert files.fetch() is None  # logged once, not at every handshake
    _rewrite(cert, certs.client.cert.read_bytes())
    assert files.fetch() is not None


def _rewrite(path: Path, data: bytes) -> None:
    staging = path.with_suffix(".new")
    staging.write_bytes(data)
    os.replace(staging, path)


def test_load_names_the_flag(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    with pytest.raises(InvalidArgument, match=r"--tls-key: .* is not the key of the certificate"):
        load_configuration(ServerTls(cert=certs.server.cert, key=certs.client.key))
    with pytest.raises(InvalidArgument, match=r"--tls-cert: .* holds no PEM certificate"):
        load_configuration(ServerTls(cert=certs.server.key, key=certs.server.key))
    with pytest.raises(InvalidArgument, match="--tls-client-ca: "):
        pair = certs.server
        load_configuration(ServerTls(cert=pair.cert, key=pair.key, client_ca=pair.key))
