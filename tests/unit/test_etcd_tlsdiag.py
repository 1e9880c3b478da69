"""TLS diagnosis classification, on failures recorded from real etcd 3.4.23 and 3.5.1 (OpenSSL 3)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from etcdforge.errors import EtcdTLSError, EtcdUnavailable
from etcdforge.etcd.tlsdiag import Facts, ProbeFailure, classify, explain, split_endpoint

EP = "https://127.0.0.1:2379"

UNKNOWN_CA = ProbeFailure(
    "handshake",
    "verify",
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
    "(_ssl.c:1006)",
    20,
)
SAN = ProbeFailure(
    "handshake",
    "verify",
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch, certificate is not "
    "valid for '127.0.0.1'. (_ssl.c:1006)",
    64,
)
EXPIRED = ProbeFailure(
    "handshake",
    "verify",
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:1006)",
    10,
)
BAD_CERT_ALERT = ProbeFailure(  # etcd 3.5.1, both with no client cert and with a foreign one
    "handshake", "ssl", "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:1006)"
)
LOST_AFTER_HANDSHAKE = ProbeFailure("read", "eof", "Connection lost")  # etcd 3.4.23, same two cases
REFUSED = ProbeFailure("connect", "refused", "[Errno 111] Connect call failed ('127.0.0.1', 38605)")
CERT_REQUIRED = ProbeFailure(
    "read", "ssl", "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)"
)


@pytest.mark.parametrize(
    ("failure", "sent", "kind"),
    [
        (UNKNOWN_CA, True, "server_unknown_ca"),
        (SAN, True, "server_san_mismatch"),
        (EXPIRED, True, "server_cert_expired"),
        (BAD_CERT_ALERT, False, "client_cert_required"),
        (BAD_CERT_ALERT, True, "client_cert_rejected"),
        (LOST_AFTER_HANDSHAKE, False, "client_cert_required"),
        (LOST_AFTER_HANDSHAKE, True, "client_cert_rejected"),
        (CERT_REQUIRED, False, "client_cert_required"),
        (REFUSED, True, "connection_refused"),
        (ProbeFailure("connect", "timeout", "no answer within 2s"), True, "unreachable"),
        (
            ProbeFailure(
                "handshake", "ssl", "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
            ),
            True,
            "not_tls",
        ),
        (
            ProbeFailure("handshake", "verify", "certificate verify failed: self-signed certificate", 18),
            True,
            "server_unknown_ca",
        ),
        (
            ProbeFailure("handshake", "ssl", "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"),
            True,
            "client_cert_rejected",
        ),
        (ProbeFailure("read", "ssl", "[SSL] sslv3 alert certificate expired"), True, "client_cert_expired"),
        (
            ProbeFailure("handshake", "ssl", "[SSL: NO_CIPHERS_AVAILABLE] no ciphers available"),
            True,
            "handshake_failed",
        ),
    ],
)
def test_classify(failure: ProbeFailure, sent: bool, kind: str) -> None:
    assert classify(failure, sent_client_cert=sent) == kind


def test_messages_are_precise() -> None:
    e = explain(
        "server_unknown_ca",
        UNKNOWN_CA,
        endpoint=EP,
        host="127.0.0.1",
        facts=Facts(server_issuer="CN=rogue", ca_subject="CN=ours"),
    )
    assert isinstance(e, EtcdTLSError) and e.endpoint == EP
    assert (
        e.message == f"{EP}: the server's certificate (issued by CN=rogue) is not signed by our CA (CN=ours)"
        ": unknown CA"
    )

    e = explain(
        "server_san_mismatch",
        SAN,
        endpoint=EP,
        host="127.0.0.1",
        facts=Facts(server_sans=("DNS:localhost", "IP:10.0.0.1")),
    )
    assert (
        "does not cover the host we dialed (127.0.0.1); its SANs are: DNS:localhost, IP:10.0.0.1" in e.message
    )

    e = explain("client_cert_required", BAD_CERT_ALERT, endpoint=EP, host="127.0.0.1", facts=Facts())
    assert e.message.endswith("the server requires a client certificate and we sent none")

    e = explain("client_cert_rejected", BAD_CERT_ALERT, endpoint=EP, host="127.0.0.1", facts=Facts())
    assert "rejected our client certificate: it is not signed by a CA the server trusts" in e.message

    e = explain("connection_refused", REFUSED, endpoint=EP, host="127.0.0.1", facts=Facts())
    assert type(e) is EtcdUnavailable and e.message == f"{EP}: connection refused — is the member running?"


def test_rejected_client_cert_that_is_expired_says_so() -> None:
    past = dt.datetime(2020, 1, 2, 3, 4, tzinfo=dt.UTC)
    e = explain(
        "client_cert_rejected",
        LOST_AFTER_HANDSHAKE,
        endpoint=EP,
        host="127.0.0.1",
        facts=Facts(client_cert_not_after=past),
    )
    assert "rejected our client certificate: it expired on 2020-01-02 03:04 UTC" in e.message


@pytest.mark.parametrize(
    ("url", "parts"),
    [("https://127.0.0.1:2379", ("https", "127.0.0.1", 2379)), ("http://[::1]:1", ("http", "::1", 1))],
)
def test_split_endpoint(url: str, parts: tuple[str, str, int]) -> None:
    assert split_endpoint(url) == parts


@pytest.mark.parametrize("bad", ["127.0.0.1:2379", "https://127.0.0.1", "unix:///x", "https://:1"])
def test_split_endpoint_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        split_endpoint(bad)


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2-requiring-a-client-cert"])
def test_the_unknown_ca_probe_never_presents_our_client_certificate(tmp_path: Path, tls12: bool) -> None:
    """A server signed by a CA we do not trust gets no client certificate from the diagnosis: the second
    (unverified) handshake that reads who issued its certificate authenticates as nobody — also from a
    TLS 1.2 server that requires one (etcd 3.5 with cipher suites set), whose certificate is read from
    a handshake we never finish."""
    import asyncio
    import ssl
    import threading
    from datetime import UTC, datetime

    from etcdforge.etcd.tlsdiag import diagnose
    from etcdforge.etcd.types import TlsFiles
    from etcdforge.pki import CaSettings, CertRequest, create_ca, issue

    now = datetime.now(UTC)
    rogue, ours = create_ca(CaSettings(cn="rogue-ca"), now), create_ca(CaSettings(cn="our-ca"), now)
    server = issue(rogue, CertRequest("srv", "srv", "server", ip_sans=("127.0.0.1",)), now)
    client = issue(ours, CertRequest("admin", "admin", "client"), now)
    files = {
        "srv.pem": server.cert_pem(),
        "srv-key.pem": server.key_pem(),
        "ours.pem": ours.cert_pem(),
        "c.pem": client.cert_pem(),
        "c-key.pem": client.key_pem(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv-key.pem")
    ctx.load_verify_locations(tmp_path / "ours.pem")  # it would accept our client certificate
    ctx.verify_mode = ssl.CERT_REQUIRED if tls12 else ssl.CERT_OPTIONAL
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM")
    presented: list[bool] = []
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(3 if tls12 else 2):
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    presented.append(tls.getpeercert() is not None and tls.getpeercert() != {})
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                presented.append(False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        tls = TlsFiles(ca=tmp_path / "ours.pem", cert=tmp_path / "c.pem", key=tmp_path / "c-key.pem")
        err = asyncio.run(diagnose(f"https://127.0.0.1:{port}", tls))
        thread.join(10)
    finally:
        listener.close()
    assert isinstance(err, EtcdTLSError) and "rogue-ca" in err.message  # the issuer was still read
    assert presented == [False] * (3 if tls12 else 2)  # and no handshake carried our certificate
