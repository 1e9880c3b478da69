"""The test hosts' network: the private bridge, one netns + veth pair per host, and the routing checks.

Role: every ``ip`` command that creates, checks or deletes harness network state.

Invariants:

- **Network safety**: :func:`claim_bridge` refuses a subnet that any existing route overlaps (checked
  and claimed under a machine-wide lock, so concurrent runs never share one), and
  :func:`assert_routed_via` raises unless the kernel routes an address directly (no gateway) out of the
  harness's bridge.
- Creation functions append each link/netns to the caller's ``created_*`` list as soon as it exists, so a
  caller can tear down exactly what a half-done setup created.
- :func:`delete_link` returns a problem string instead of raising (teardown must always complete).
"""

from __future__ import annotations

import fcntl
import ipaddress
from pathlib import Path

from .base import HostHarnessError, SubnetInUseError, TestHost, run_local


def assert_routed_via(address: str, bridge: str) -> None:
    """Raise unless the kernel routes ``address`` directly (no gateway) out of ``bridge``."""
    out = run_local(["ip", "-o", "route", "get", address], timeout=10).stdout.split()
    dev = out[out.index("dev") + 1] if "dev" in out else None
    if dev != bridge or "via" in out:
        raise HostHarnessError(
            f"refusing to send to {address}: it routes as {' '.join(out)!r}, not directly via test bridge "
            f"{bridge}"
        )


def routes_overlapping(subnet: ipaddress.IPv4Network) -> list[str]:
    """The routes (any table, default routes excepted) whose destination overlaps ``subnet``."""
    kinds = {"local", "broadcast", "unicast", "multicast", "unreachable", "blackhole", "prohibit", "throw"}
    found = []
    for line in run_local(
        ["ip", "-o", "-4", "route", "show", "table", "all"], timeout=10
    ).stdout.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        dest = tokens[1] if tokens[0] in kinds and len(tokens) > 1 else tokens[0]
        if dest == "default":
            continue
        try:
            if ipaddress.ip_network(dest, strict=False).overlaps(subnet):
                found.append(line.strip())
        except ValueError:
            continue
    return found


def claim_bridge(
    lock_path: Path,
    subnet: ipaddress.IPv4Network,
    bridge: str,
    bridge_address: str,
    created_links: list[str],
) -> None:
    """Create ``bridge`` with ``bridge_address`` in ``subnet`` and bring it up; raise
    :class:`SubnetInUseError` (creating nothing) if an existing route overlaps ``subnet``."""
    # check-then-claim the subnet under a machine-wide lock, so concurrent runs never share one
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        overlapping = routes_overlapping(subnet)
        if overlapping:
            raise SubnetInUseError(f"subnet {subnet} overlaps existing routes: {overlapping}")
        run_local(["ip", "link", "add", bridge, "type", "bridge"])
        created_links.append(bridge)
        run_local(["ip", "addr", "add", f"{bridge_address}/{subnet.prefixlen}", "dev", bridge])
    run_local(["ip", "link", "set", bridge, "up"])


def add_host_network(
    host: TestHost, bridge: str, prefixlen: int, created_netns: list[str], created_links: list[str]
) -> None:
    """Give ``host`` its netns, with ``host0`` (its address, up) paired to ``host.veth`` on ``bridge``."""
    run_local(["ip", "netns", "add", host.netns])
    created_netns.append(host.netns)
    run_local(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "host0", "netns", host.netns])
    created_links.append(host.veth)
    run_local(["ip", "link", "set", host.veth, "master", bridge, "up"])
    prefixed = f"{host.address}/{prefixlen}"
    run_local(["ip", "-n", host.netns, "addr", "add", prefixed, "dev", "host0"])
    run_local(["ip", "-n", host.netns, "link", "set", "host0", "up"])
    run_local(["ip", "-n", host.netns, "link", "set", "lo", "up"])


def delete_link(name: str) -> str | None:
    """Delete the link ``name`` if it exists; a problem string if it could not be removed."""
    if not Path("/sys/class/net", name).exists():
        return None
    proc = run_local(["ip", "link", "del", name], check=False)
    if proc.returncode == 0 or not Path("/sys/class/net", name).exists():
        return None  # gone, maybe removed by the kernel with its peer meanwhile
    return f"ip link del {name}: {proc.stderr.strip()}"
