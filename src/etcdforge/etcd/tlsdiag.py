"""Find out *why* a connection to an etcd endpoint fails, which gRPC does not tell us.

Role: when a gRPC call fails with a bare UNAVAILABLE, :func:`diagnose` redoes the connection with
Python's :mod:`ssl` (same CA, same client pair, same host), records precisely where and how it fails
(:class:`ProbeFailure`), and turns that into an actionable :class:`~etcdforge.errors.EtcdTLSError` or
:class:`~etcdforge.errors.EtcdUnavailable`.

Invariants:
- The network part (``_probe``) only records facts; :func:`classify` and :func:`explain` are pure and are
  unit-tested on recorded OpenSSL texts.
- A probe never sends an etcd request: after the handshake it writes only the HTTP/2 preface, because a
  server rejects a client certificate *after* the client's handshake finishes (TLS 1.3) and we must read
  to see its alert.
- :func:`diagnose` returns None when the probe succeeds, so callers fall back to gRPC's own error rather
  than inventing a TLS cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import ssl
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from etcdforge.errors import EtcdError, EtcdTLSError, EtcdUnavailable

from .types import TlsFiles

FailureKind = Literal[
    "connection_refused",
    "unreachable",
    "server_unknown_ca",
    "server_san_mismatch",
    "server_cert_expired",
    "server_cert_not_yet_valid",
    "server_cert_wrong_purpose",
    "client_cert_required",
    "client_cert_rejected",
    "client_cert_expired",
    "not_tls",
    "handshake_failed",
]

# OpenSSL X509_V_ERR_* codes we explain specifically.
_VERIFY_UNKNOWN_CA: Final = frozenset({2, 18, 19, 20, 21})
_VERIFY_EXPIRED: Final = 10
_VERIFY_NOT_YET_VALID: Final = 9
_VERIFY_PURPOSE: Final = 26
_VERIFY_HOST_MISMATCH: Final = frozenset({62, 63, 64})

_HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    """What the probe saw: the stage that failed, the exception kind and text, and OpenSSL's verify code."""

    stage: Literal["connect", "handshake", "read"]
    error: Literal["refused", "timeout", "os", "verify", "ssl", "eof"]
    message: str
    verify_code: int | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Extra facts gathered for the message; all optional because each needs another connection."""

    server_sans: tuple[str, ...] | None = None
    server_issuer: str | None = None
    ca_subject: str | None = None
    client_cert_not_after: _dt.datetime | None = None
    sent_client_cert: bool = True


def classify(failure: ProbeFailure, *, sent_client_cert: bool) -> FailureKind:
    """Name the cause of a recorded probe failure. Pure."""
    msg = failure.message.lower()
    if failure.error == "refused":
        return "connection_refused"
    if failure.error in ("timeout", "os") and failure.stage == "connect":
        return "unreachable"
    if failure.error == "verify" or "certificate verify failed" in msg:
        code = failure.verify_code
        if code in _VERIFY_HOST_MISMATCH or "mismatch" in msg:
            return "server_san_mismatch"
        if code == _VERIFY_EXPIRED or "certificate has expired" in msg:
            return "server_cert_expired"
        if code == _VERIFY_NOT_YET_VALID or "not yet valid" in msg:
            return "server_cert_not_yet_valid"
        if code == _VERIFY_PURPOSE or "unsupported certificate purpose" in msg:
            return "server_cert_wrong_purpose"
        return "server_unknown_ca"
    if "wrong version number" in msg or "record layer failure" in msg or "http request" in msg:
        return "not_tls"
    # Alerts the server sends about *our* certificate (OpenSSL spells them "<ver> alert <name>").
    if "alert certificate required" in msg:
        return "client_cert_required"
    if "alert certificate expired" in msg:
        return "client_cert_expired"
    if any(
        a in msg
        for a in (
            "alert bad certificate",
            "alert unknown ca",
            "alert unsupported certificate",
            "alert certificate unknown",
            "alert decrypt error",
            "alert handshake failure",
        )
    ):
        # Without a certificate to judge, any certificate complaint means "you must send one".
        return "client_cert_rejected" if sent_client_cert else "client_cert_required"
    if failure.error == "eof" and failure.stage == "read":
        # We completed the handshake, yet the server hung up before answering our HTTP/2 preface. Go
        # (etcd 3.4's build) does that when it rejects the client certificate after the TLS 1.3
        # handshake: its alert races the close and asyncio often reports only "Connection lost".
        return "client_cert_rejected" if sent_client_cert else "client_cert_required"
    return "handshake_failed"


def explain(kind: FailureKind, failure: ProbeFailure, *, endpoint: str, host: str, facts: Facts) -> EtcdError:
    """Build the user-facing error for a classified failure. Pure."""
    where = f"{endpoint}: "
    if kind == "connection_refused":
        return EtcdUnavailable(where + "connection refused — is the member running?", endpoint=endpoint)
    if kind == "unreachable":
        return EtcdUnavailable(
            where + f"cannot connect ({failure.message or 'no answer'})",
            endpoint=endpoint,
            hint="check the address, the firewall and that the member is running",
        )
    if kind == "server_unknown_ca":
        issuer = f" (issued by {facts.server_issuer})" if facts.server_issuer else ""
        ours = f" ({facts.ca_subject})" if facts.ca_subject else ""
        return EtcdTLSError(
            where + f"the server's certificate{issuer} is not signed by our CA{ours}: unknown CA",
            endpoint=endpoint,
            hint="use the CA that issued the members' certificates, or reissue them from this CA",
        )
    if kind == "server_san_mismatch":
        sans = ", ".join(facts.server_sans) if facts.server_sans else "none"
        return EtcdTLSError(
            where + f"the server's certificate does not cover the host we dialed ({host}); "
            f"its SANs are: {sans}",
            endpoint=endpoint,
            hint=f"reissue the member certificate with {host} in its SANs, or dial a name it lists",
        )
    if kind == "server_cert_expired":
        return EtcdTLSError(
            where + "the server's certificate has expired",
            endpoint=endpoint,
            hint="renew the member certificate",
        )
    if kind == "server_cert_not_yet_valid":
        return EtcdTLSError(
            where + "the server's certificate is not valid yet (check clocks)", endpoint=endpoint
        )
    if kind == "server_cert_wrong_purpose":
        return EtcdTLSError(
            where + "the server's certificate is not usable for TLS server auth "
            "(missing the serverAuth extended key usage)",
            endpoint=endpoint,
        )
    if kind == "client_cert_required":
        return EtcdTLSError(
            where + "the server requires a client certificate and we sent none",
            endpoint=endpoint,
            hint="configure a client certificate and key signed by the cluster CA",
        )
    if kind == "client_cert_expired" or (
        kind == "client_cert_rejected"
        and facts.client_cert_not_after is not None
        and facts.client_cert_not_after < _dt.datetime.now(_dt.UTC)
    ):
        when = f" on {facts.client_cert_not_after:%Y-%m-%d %H:%M UTC}" if facts.client_cert_not_after else ""
        return EtcdTLSError(
            where + f"the server rejected our client certificate: it expired{when}",
            endpoint=endpoint,
            hint="renew the client certificate",
        )
    if kind == "client_cert_rejected":
        return EtcdTLSError(
            # No alert name here: whether we read the server's alert or only its hang-up is a race.
            where + "the server rejected our client certificate: it is not "
            "signed by a CA the server trusts, or lacks the clientAuth extended key usage",
            endpoint=endpoint,
            hint="use a client certificate issued by the cluster CA",
        )
    if kind == "not_tls":
        return EtcdTLSError(
            where + "the endpoint does not speak TLS (use http:// for it, or enable TLS on the member)",
            endpoint=endpoint,
        )
    return EtcdTLSError(where + f"TLS handshake failed: {failure.message}", endpoint=endpoint)


def split_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``https://127.0.0.1:2379`` → (scheme, host, port). Raises ValueError for anything unusable."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"endpoint must look like https://HOST:PORT, got {endpoint!r}")
    return parts.scheme, parts.hostname, parts.port


def _context(tls: TlsFiles | None, *, verify: bool, check_hostname: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if verify and tls is not None:
        ctx.load_verify_locations(cafile=str(tls.ca))
    # our client certificate only ever goes to a server whose chain we verified: an unverified probe
    # (to read who issued an unknown server's certificate) authenticates as nobody
    if verify and tls is not None and tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


@dataclass(frozen=True, slots=True)
class _Probe:
    failure: ProbeFailure | None
    cert: dict[str, object] | None = None  # decoded peer certificate (only when the chain was verified)
    raw: bytes | None = None  # DER of the peer certificate


async def _probe(host: str, port: int, ctx: ssl.SSLContext | None, timeout: float) -> _Probe:
    """Connect, handshake and read once; record the failure (if any) and the peer's certificate."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None),
            timeout,
        )
    except ConnectionRefusedError as exc:
        return _Probe(ProbeFailure("connect", "refused", str(exc)))
    except ssl.SSLCertVerificationError as exc:
        return _Probe(ProbeFailure("handshake", "verify", str(exc), exc.verify_code))
    except ssl.SSLError as exc:
        return _Probe(ProbeFailure("handshake", "ssl", str(exc)))
    except TimeoutError:
        return _Probe(ProbeFailure("connect", "timeout", f"no answer within {timeout:g}s"))
    except OSError as exc:
        return _Probe(ProbeFailure("connect", "os", str(exc) or type(exc).__name__))
    try:
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is None:
            return _Probe(None)  # plain TCP endpoint: reachable is all we can check
        try:
            cert = sslobj.getpeercert()
            raw = sslobj.getpeercert(binary_form=True)
        except ValueError:
            # asyncio reports the connection open, but the server's alert already tore the session down
            # ("handshake not done yet"); the read below surfaces that alert.
            cert, raw = None, None
        try:
            writer.write(_HTTP2_PREFACE)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1), timeout)
        except ssl.SSLError as exc:
            return _Probe(ProbeFailure("read", "ssl", str(exc)), cert, raw)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return _Probe(ProbeFailure("read", "eof", str(exc) or type(exc).__name__), cert, raw)
        except TimeoutError:
            data = b"?"  # silence after the preface: the server accepted us and waits for more
        if not data:
            failure = ProbeFailure("read", "eof", "server closed the connection after the handshake")
            return _Probe(failure, cert, raw)
        return _Probe(None, cert, raw)
    finally:
        writer.close()
        # Closing a connection the server already dropped may fail; there is nothing to learn from it.
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


def _unverified_server_cert(host: str, port: int, timeout: float) -> bytes | None:
    """The DER of the certificate a server we could not verify presents, read without presenting ours
    (we do not authenticate to a server we have not verified). Blocking, so the certificate is taken
    right after the handshake, before a server that wanted a client certificate tears the session down
    (TLS 1.3); a TLS 1.2 server that requires one aborts the handshake first: then None."""
    import socket

    ctx = _context(None, verify=False, check_hostname=False)
    try:
        with (
            socket.create_connection((host, port), timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=host) as conn,
        ):
            return conn.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return _tls12_server_cert(host, port, timeout)


#: ECDHE AEAD suites first, then what older servers offer (only read, never used to talk)
_TLS12_SUITES = bytes.fromhex("c02bc02fc02cc030cca9cca8c009c013c00ac014009c009d002f0035")


def _tls12_server_cert(host: str, port: int, timeout: float) -> bytes | None:
    """The server's certificate from a TLS 1.2 handshake we never finish: in TLS 1.2 the Certificate
    message travels in the clear before the server asks for ours, so a ClientHello and reading up to
    it is enough (nothing of ours is ever sent)."""
    import ipaddress
    import secrets
    import socket
    import struct

    def ext(kind: int, body: bytes) -> bytes:
        return struct.pack("!HH", kind, len(body)) + body

    exts = ext(0x000A, bytes.fromhex("0006001d00170018"))  # groups: x25519, P-256, P-384
    exts += ext(0x000B, b"\x01\x00")  # point formats: uncompressed
    exts += ext(0x000D, bytes.fromhex("0012040305030603080408050806040105010601"))  # signatures
    try:
        ipaddress.ip_address(host)
    except ValueError:
        name = host.encode()
        exts += ext(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
    body = b"\x03\x03" + secrets.token_bytes(32) + b"\x00"
    body += struct.pack("!H", len(_TLS12_SUITES)) + _TLS12_SUITES + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.sendall(record)
            buf = b""
            while True:
                header = _recv_exact(sock, 5)
                if header is None or header[0] != 0x16:
                    return None  # an alert, or not TLS
                payload = _recv_exact(sock, struct.unpack("!H", header[3:5])[0])
                if payload is None:
                    return None
                buf += payload
                while len(buf) >= 4:
                    kind, size = buf[0], int.from_bytes(buf[1:4], "big")
                    if len(buf) < 4 + size:
                        break
                    message, buf = buf[4 : 4 + size], buf[4 + size :]
                    if kind == 11:  # Certificate: a 3-byte list length, then 3-byte length + DER each
                        first = int.from_bytes(message[3:6], "big")
                        return message[6 : 6 + first] or None
                    if kind == 14:  # ServerHelloDone without a certificate
                        return None
    except OSError:
        return None


def _recv_exact(sock: Any, n: int) -> bytes | None:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def _format_sans(cert: dict[str, object] | None) -> tuple[str, ...]:
    if not cert:
        return ()
    sans = cert.get("subjectAltName", ())
    out: list[str] = []
    if isinstance(sans, tuple):
        for entry in sans:
            if isinstance(entry, tuple) and len(entry) == 2:
                kind = "IP" if entry[0] == "IP Address" else str(entry[0])
                out.append(f"{kind}:{str(entry[1]).strip()}")
    return tuple(out)


def _cert_facts(raw: bytes | None, ca: TlsFiles | None) -> tuple[str | None, str | None]:
    """Issuer of the server's certificate and subject of our CA, for an "unknown CA" message."""
    from cryptography import x509  # only needed on this failure path

    issuer = x509.load_der_x509_certificate(raw).issuer.rfc4514_string() if raw else None
    subject = None
    if ca is not None:
        try:
            subject = x509.load_pem_x509_certificate(ca.ca.read_bytes()).subject.rfc4514_string()
        except (OSError, ValueError):
            subject = None
    return issuer, subject


def _client_not_after(tls: TlsFiles | None) -> _dt.datetime | None:
    if tls is None or tls.cert is None:
        return None
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(tls.cert.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


async def diagnose(endpoint: str, tls: TlsFiles | None, *, timeout: float = 2.0) -> EtcdError | None:
    """Probe ``endpoint`` as our gRPC channel would; return the precise error, or None if it connects."""
    scheme, host, port = split_endpoint(endpoint)
    try:
        ctx = _context(tls, verify=True, check_hostname=True) if scheme == "https" else None
    except (OSError, ssl.SSLError) as exc:
        files = f"{tls.ca}, {tls.cert}, {tls.key}" if tls is not None else "none"
        return EtcdTLSError(
            f"cannot load this client's TLS files ({files}): {exc}",
            endpoint=endpoint,
            hint="`etcdforge env` shows the files etcdforge uses now",
        )
    failure = (await _probe(host, port, ctx, timeout)).failure
    if failure is None:
        return None
    sent_cert = tls is not None and tls.cert is not None
    kind = classify(failure, sent_client_cert=sent_cert)
    facts = Facts(sent_client_cert=sent_cert)
    if kind == "server_san_mismatch":
        # Handshake again, still verifying the chain but not the host, to read the SANs it does have.
        probe = await _probe(host, port, _context(tls, verify=True, check_hostname=False), timeout)
        facts = Facts(server_sans=_format_sans(probe.cert), sent_client_cert=sent_cert)
    elif kind == "server_unknown_ca":
        raw = await asyncio.to_thread(_unverified_server_cert, host, port, timeout)
        issuer, subject = _cert_facts(raw, tls)
        facts = Facts(server_issuer=issuer, ca_subject=subject, sent_client_cert=sent_cert)
    elif kind in ("client_cert_rejected", "client_cert_expired"):
        facts = Facts(client_cert_not_after=_client_not_after(tls), sent_client_cert=sent_cert)
    return explain(kind, failure, endpoint=endpoint, host=host, facts=facts)
