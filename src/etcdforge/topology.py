"""Pure derivations from a spec: URLs, initial-cluster, SAN sets, certificate requests, quorum math.

Nothing here does I/O. Every function is deterministic in its inputs, so the planners and renderers that
build on it can be golden-tested.

Invariants:
- one server and one peer certificate per member, listing *that member's* addresses only (plus
  127.0.0.1/localhost, which etcdctl on the node and the local mode's loopback source address need) —
  adding a member never changes another member's certificate;
- ``initial-cluster`` is built from the names and peer URLs in the spec (never by string prefixing, the
  guide's ``etcd1=${INITIAL_CLUSTER}`` trap).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from etcdforge.spec import ClusterSpec, MemberSpec

LOOPBACK_SANS_IP = ("127.0.0.1",)
LOOPBACK_SANS_DNS = ("localhost",)


def _host(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"[{ip}]" if ip.version == 6 else str(ip)


def client_url(spec: ClusterSpec, member: MemberSpec) -> str:
    return f"https://{_host(member.address)}:{spec.etcd.client_port}"


def peer_url(spec: ClusterSpec, member: MemberSpec) -> str:
    return f"https://{_host(member.address)}:{spec.etcd.peer_port}"


def client_urls(spec: ClusterSpec) -> tuple[str, ...]:
    return tuple(client_url(spec, m) for m in spec.members)


def listen_client_urls(spec: ClusterSpec, member: MemberSpec) -> tuple[str, ...]:
    """Where the member listens for clients.

    On a real host also on 127.0.0.1, so etcdctl on the node works over loopback (a gap in the guide).
    In local mode every member has its own 127.0.0.x address and 127.0.0.1 belongs to one of them.
    """
    urls = [client_url(spec, member)]
    if spec.on_own_hosts and not ipaddress.ip_address(member.address).is_loopback:
        urls.append(f"https://127.0.0.1:{spec.etcd.client_port}")
    return tuple(urls)


def metrics_url(spec: ClusterSpec, member: MemberSpec) -> str | None:
    """The plain-http metrics listener, seen from the member's own machine (None: the spec has none).

    Loopback only, never the network: on a real host 127.0.0.1; in local mode the member's own
    127.0.0.x (127.0.0.1 belongs to one of the members), so every member can use the same port.
    """
    port = spec.etcd.metrics_port
    if port is None:
        return None
    address = member.address
    if spec.on_own_hosts and not ipaddress.ip_address(address).is_loopback:
        address = "127.0.0.1"
    return f"http://{_host(address)}:{port}"


def initial_cluster(spec: ClusterSpec, members: Sequence[MemberSpec] | None = None) -> str:
    chosen = spec.members if members is None else members
    return ",".join(f"{m.name}={peer_url(spec, m)}" for m in chosen)


# --- quorum math ------------------------------------------------------------------------------------


def quorum(voters: int) -> int:
    """Members needed for a majority of ``voters``."""
    if voters < 1:
        raise ValueError("a cluster has at least one voting member")
    return voters // 2 + 1


def fault_tolerance(voters: int) -> int:
    return (voters - 1) // 2


# --- certificates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SanSet:
    ips: tuple[str, ...]
    dns: tuple[str, ...]


def _dedupe(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def member_sans(member: MemberSpec) -> SanSet:
    """SANs for a member's server and peer certificate.

    The member's address and DNS names, plus 127.0.0.1/localhost: etcdctl on the node dials loopback,
    and in local mode Linux sends peer traffic from 127.0.0.1, which etcd's peer listener checks against
    the client certificate's IP SANs (etcd-facts §1).
    """
    return SanSet(
        ips=_dedupe([member.address, *LOOPBACK_SANS_IP]),
        dns=_dedupe([*member.dns_names, *LOOPBACK_SANS_DNS]),
    )


def server_cert_name(member: str) -> str:
    return f"{member}-server"


def peer_cert_name(member: str) -> str:
    return f"{member}-peer"


def client_cert_name(client: str) -> str:
    return f"{client}-client"


ADMIN_CLIENT = "admin"
