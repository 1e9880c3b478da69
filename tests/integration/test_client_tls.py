"""Each TLS (and connection) failure is diagnosed precisely against a real etcd (3.4 and 3.5).

gRPC reports all of these as a bare UNAVAILABLE; the client must name the actual cause.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_client import Cluster, Pair, Pki, etcd_binaries, free_ports, make_pki, run_cluster

from etcdforge.errors import EtcdError, EtcdTLSError, EtcdUnavailable
from etcdforge.etcd import EtcdClient, TlsFiles

pytestmark = pytest.mark.integration
BINARIES = etcd_binaries()


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    workdir = Path(tempfile.mkdtemp(prefix="etcdforge-it-pki-"))
    try:
        yield make_pki(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=sorted(BINARIES), ids=lambda v: f"etcd{v}")
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def good(version: str, pki: Pki) -> Iterator[Cluster]:
    with run_cluster(BINARIES[version], version, pki, 1) as c:
        yield c


def server_with(version: str, pki: Pki, server: Pair) -> Iterator[Cluster]:
    with run_cluster(BINARIES[version], version, pki, 1, server=server) as c:
        yield c


@pytest.fixture(scope="module")
def no_ip_san(version: str, pki: Pki) -> Iterator[Cluster]:
    yield from server_with(version, pki, pki.server_no_ip_san)


@pytest.fixture(scope="module")
def expired(version: str, pki: Pki) -> Iterator[Cluster]:
    yield from server_with(version, pki, pki.server_expired)


def failure(endpoint: str, tls: TlsFiles | None) -> EtcdError:
    """The error a real call raises, plus a check that health() reports the same text without raising."""

    async def main() -> EtcdError:
        async with EtcdClient([endpoint], tls, timeout=5) as c:
            with pytest.raises(EtcdError) as exc_info:
                await c.get("k")
            h = await c.health(endpoint)
            assert not h.healthy and h.error == exc_info.value.message
            # Non-idempotent calls take the connect-first path; it must diagnose identically.
            with pytest.raises(EtcdError) as write_exc:
                await c.put("k", "v")
            assert write_exc.value.message == exc_info.value.message
            return exc_info.value

    return asyncio.run(main())


def test_sanity_good_client_connects(good: Cluster) -> None:
    async def main() -> None:
        tls = TlsFiles(good.pki.ca.pair.cert, good.pki.client.cert, good.pki.client.key)
        async with EtcdClient(good.endpoints, tls) as c:
            for _ in range(100):
                if (await c.health(good.endpoints[0])).healthy:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("member never became healthy")

    asyncio.run(main())


def test_unknown_ca(good: Cluster, pki: Pki) -> None:
    err = failure(good.endpoints[0], TlsFiles(pki.other_ca.pair.cert, pki.client.cert, pki.client.key))
    assert isinstance(err, EtcdTLSError) and err.endpoint == good.endpoints[0]
    assert "not signed by our CA" in err.message and "unknown CA" in err.message
    assert "etcdforge-test-ca" in err.message and "unrelated-ca" in err.message


def test_san_mismatch_names_host_and_sans(no_ip_san: Cluster, pki: Pki) -> None:
    err = failure(no_ip_san.endpoints[0], TlsFiles(pki.ca.pair.cert, pki.client.cert, pki.client.key))
    assert isinstance(err, EtcdTLSError)
    assert "does not cover the host we dialed (127.0.0.1)" in err.message
    assert "DNS:localhost" in err.message and "IP:" not in err.message


def test_no_client_certificate(good: Cluster, pki: Pki) -> None:
    err = failure(good.endpoints[0], TlsFiles(pki.ca.pair.cert))
    assert isinstance(err, EtcdTLSError)
    assert "requires a client certificate and we sent none" in err.message


def test_client_certificate_from_other_ca(good: Cluster, pki: Pki) -> None:
    err = failure(good.endpoints[0], TlsFiles(pki.ca.pair.cert, pki.other_client.cert, pki.other_client.key))
    assert isinstance(err, EtcdTLSError)
    assert "rejected our client certificate" in err.message
    assert "not signed by a CA the server trusts" in err.message


def test_expired_server_certificate(expired: Cluster, pki: Pki) -> None:
    err = failure(expired.endpoints[0], TlsFiles(pki.ca.pair.cert, pki.client.cert, pki.client.key))
    assert isinstance(err, EtcdTLSError) and "certificate has expired" in err.message


def test_connection_refused(pki: Pki) -> None:
    (port,) = free_ports(1)  # nothing listens there
    err = failure(f"https://127.0.0.1:{port}", TlsFiles(pki.ca.pair.cert, pki.client.cert, pki.client.key))
    assert type(err) is EtcdUnavailable
    assert err.message.endswith("connection refused — is the member running?")
