"""Which certificate does a member present *now*? A fresh TLS handshake, nothing else.

etcd re-reads its certificate and key files on every new handshake (etcd-facts, "Certificate hot
reload"), so after a renewal the proof that a member serves the new certificate is a new handshake that
shows the new serial. gRPC channels are reused and long-lived, so this opens a plain TLS connection of its
own, presents our client certificate (etcd's listeners require one), verifies the chain against the CA
bundle we trust, reads the peer certificate and closes.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from etcdforge.errors import EtcdTLSError, EtcdUnavailable
from etcdforge.etcd.types import TlsFiles


@dataclass(frozen=True)
class Presented:
    """The certificate an endpoint presented in one handshake."""

    url: str
    cert: x509.Certificate

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def _context(tls: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    # We compare serials against the certificate we issued for this member; the name check belongs to
    # the client (our EtcdClient does it) and would only duplicate what the serial proves.
    ctx.check_hostname = False
    if tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


async def presented_certificate(url: str, tls: TlsFiles, *, timeout: float = 3.0) -> Presented:
    """Handshake with ``url`` (``https://host:port``) and return the certificate it presented.

    Raises :class:`EtcdUnavailable` when nothing answers and :class:`EtcdTLSError` when the handshake
    fails (for example the presented chain is not trusted by ``tls.ca``).
    """
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise EtcdUnavailable(f"{url}: not an https://host:port URL")
    ctx = _context(tls)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port, ssl=ctx), timeout
        )
    except ssl.SSLError as exc:
        raise EtcdTLSError(f"TLS handshake with {url} failed: {exc.reason or exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise EtcdUnavailable(f"{url} did not answer: {exc or 'timed out'}") from exc
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise EtcdTLSError(f"{url} presented no certificate")
        return Presented(url, x509.load_der_x509_certificate(der))
    finally:
        writer.close()
        with suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
