"""What each consumer needs to reach the cluster as one client, pure: ``client config NAME --for X``.

Every output names the client's certificate, key and the CA bundle clients trust, and the members'
client URLs. Where the consumer keeps its keys under a prefix of its own (kube-apiserver, Patroni,
APISIX, CoreDNS), the client's single prefix is filled in.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from etcdforge.render import ClientPaths, etcdctl_env, etcdctl_tls_args
from etcdforge.yamlio import dump_yaml

Consumer = Literal["etcdctl", "env", "kube-apiserver", "patroni", "apisix", "coredns", "python"]
CONSUMERS: tuple[Consumer, ...] = (
    "etcdctl",
    "env",
    "kube-apiserver",
    "patroni",
    "apisix",
    "coredns",
    "python",
)


@dataclass(frozen=True)
class ClientTarget:
    endpoints: tuple[str, ...]  # https://IP:PORT
    paths: ClientPaths
    prefix: str | None  # the client's one key prefix, when it has exactly one


def _hostports(endpoints: Sequence[str]) -> list[str]:
    return [e.split("://", 1)[-1] for e in endpoints]


def render_config(consumer: Consumer, t: ClientTarget) -> str:
    p = t.paths
    if consumer == "etcdctl":
        return "etcdctl " + " ".join(shlex.quote(a) for a in etcdctl_tls_args(t.endpoints, p)) + "\n"
    if consumer == "env":
        return etcdctl_env(t.endpoints, p).decode()
    if consumer == "kube-apiserver":
        flags = [
            f"--etcd-servers={','.join(t.endpoints)}",
            f"--etcd-cafile={p.ca_cert}",
            f"--etcd-certfile={p.cert}",
            f"--etcd-keyfile={p.key}",
        ]
        if t.prefix:
            flags.append(f"--etcd-prefix={t.prefix.rstrip('/') or '/'}")
        return "\n".join(shlex.quote(f) for f in flags) + "\n"
    if consumer == "patroni":
        block: dict[str, object] = {
            "etcd3": {
                "hosts": _hostports(t.endpoints),
                "protocol": "https",
                "cacert": p.ca_cert,
                "cert": p.cert,
                "key": p.key,
            }
        }
        if t.prefix:
            block = {"namespace": t.prefix, **block}
        return dump_yaml(block)
    if consumer == "apisix":
        etcd: dict[str, object] = {"host": list(t.endpoints)}
        if t.prefix:
            etcd["prefix"] = t.prefix.rstrip("/") or "/"
        etcd["tls"] = {"cert": p.cert, "key": p.key, "verify": True}
        return dump_yaml(
            {"apisix": {"ssl": {"ssl_trusted_certificate": p.ca_cert}}, "deployment": {"etcd": etcd}}
        )
    if consumer == "coredns":
        path = (t.prefix.rstrip("/") or "/") if t.prefix else "/skydns"
        return (
            "etcd {\n"
            f"    path {path}\n"
            f"    endpoint {' '.join(t.endpoints)}\n"
            f"    tls {p.cert} {p.key} {p.ca_cert}\n"
            "}\n"
        )
    # python: etcdforge's own asyncio client
    return (
        "from pathlib import Path\n\n"
        "from etcdforge.etcd import EtcdClient, TlsFiles\n\n"
        "tls = TlsFiles(\n"
        f"    ca=Path({p.ca_cert!r}),\n"
        f"    cert=Path({p.cert!r}),\n"
        f"    key=Path({p.key!r}),\n"
        ")\n"
        f"client = EtcdClient({list(t.endpoints)!r}, tls)  # async with client: await client.get(...)\n"
    )
