"""The runtime factory: the one place (besides the spec) that reads the spec's mode.

Local mode: every member's host is this machine (:class:`~etcdforge.hosts.local.LocalHost`) and its etcd
a supervised process. Hosts mode: an SSH connection per member (host keys verified) and systemd.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etcdforge import layout
from etcdforge.errors import WorkspaceError
from etcdforge.hosts.base import Host
from etcdforge.hosts.errors import HostError
from etcdforge.render import MemberPaths
from etcdforge.runtime.core import Runtime
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, resolve_path

if TYPE_CHECKING:  # without importing asyncssh on the CLI path
    from etcdforge.hosts.ssh import SshTarget


def ssh_target(spec: ClusterSpec, ws: Workspace, name: str) -> SshTarget:
    """How to reach member ``name``'s host: its own ``ssh`` settings over the spec's defaults."""
    from etcdforge.hosts.ssh import SshTarget

    member = spec.member(name)
    over = member.ssh
    d = spec.ssh
    identity = (over.identity_file if over and over.identity_file else None) or d.identity_file
    return SshTarget(
        host=(over.host if over and over.host else None) or member.address,
        port=(over.port if over and over.port else None) or d.port,
        user=(over.user if over and over.user else None) or d.user,
        identity_file=resolve_path(ws, identity) if identity else None,
        sudo=over.sudo if over and over.sudo is not None else d.sudo,
    )


def _local(spec: ClusterSpec) -> bool:
    return spec.mode == "local"


@dataclass(frozen=True)
class Placement:
    """Where the members run, as the facts planners and verbs need — so that none of them asks the mode.

    ``members_here``: every member is a process of this machine and user, its files under the workspace
    (local mode); otherwise each runs under systemd on its own host, its files at the fixed layout, owned
    by root (hosts mode). ``peer_reachable``: this machine can reach the members' peer port (a check may
    require it; on real hosts a firewall may keep it from the control machine)."""

    members_here: bool
    workspace: Workspace
    spec: ClusterSpec

    @property
    def file_owner(self) -> str | None:
        """Who owns the files installed for a member (None: this user)."""
        return None if self.members_here else "root"

    @property
    def peer_reachable(self) -> bool:
        return self.members_here

    @property
    def picks_addresses(self) -> bool:
        """Whether a new member without an address gets the next free 127.0.0.x."""
        return self.members_here

    def member_paths(self, name: str) -> MemberPaths:
        """Where member ``name``'s etcd reads its config, data, certificates and keys."""
        if self.members_here:
            return self.workspace.member_paths(name)
        return layout.member_paths(self.spec)

    def data_location(self, name: str) -> str:
        """Where a member's etcd data lives, for the user."""
        if self.members_here:
            return f"{self.workspace.member_paths(name).data_dir} in the workspace"
        return f"{layout.data_dir(self.spec).rstrip('/')}/member on its host"


def placement(spec: ClusterSpec, ws: Workspace) -> Placement:
    """The placement of ``spec``'s members (the one place, besides the spec, that reads its mode)."""
    return Placement(_local(spec), ws, spec)


@asynccontextmanager
async def connect_hosts(
    spec: ClusterSpec,
    ws: Workspace,
    members: Sequence[str] | None = None,
    *,
    accept_new_host_keys: bool = False,
    required: bool = True,
) -> AsyncIterator[dict[str, Host]]:
    """Hosts of ``members`` (default: all), connected concurrently; all or nothing, unless
    ``required`` is False: then an unreachable host is left out (removing a dead member must work)."""
    names = [m.name for m in spec.members] if members is None else list(members)
    if _local(spec):
        from etcdforge.hosts.local import LocalHost

        yield {n: LocalHost(n) for n in names}
        return
    from etcdforge.hosts.ssh import connect

    known = resolve_path(ws, spec.ssh.known_hosts)
    results = await asyncio.gather(
        *(
            connect(n, ssh_target(spec, ws, n), known_hosts=known, accept_new_host_keys=accept_new_host_keys)
            for n in names
        ),
        return_exceptions=True,
    )
    hosts: dict[str, Host] = {
        n: r for n, r in zip(names, results, strict=True) if not isinstance(r, BaseException)
    }
    try:
        for result in results:
            # (connect() already checked `sudo -n` where the target uses sudo)
            if isinstance(result, BaseException) and (required or not isinstance(result, HostError)):
                raise result
        yield hosts
    finally:
        await asyncio.gather(*(h.close() for h in hosts.values()), return_exceptions=True)


@asynccontextmanager
async def connected(
    spec: ClusterSpec, ws: Workspace, *, accept_new_host_keys: bool = False
) -> AsyncIterator[dict[str, Host]]:
    """Connections to every member's host of a hosts-mode workspace (verbs for real hosts only)."""
    if _local(spec):
        raise WorkspaceError(f"{ws.root} is a local workspace; use `etcdforge up` there")
    async with connect_hosts(spec, ws, accept_new_host_keys=accept_new_host_keys) as hosts:
        yield hosts


def make_runtime(
    spec: ClusterSpec,
    ws: Workspace,
    hosts: dict[str, Host],
    *,
    etcd_bin: str | None = None,
    etcd_binary: Path | None = None,
) -> Runtime:
    """The runtime for ``spec``'s mode over already connected ``hosts``."""
    if _local(spec):
        from etcdforge.hosts.local import LocalHost
        from etcdforge.runtime.processes import ProcessServices

        return Runtime(
            spec, ws, hosts, ProcessServices(spec, ws, LocalHost(), etcd_bin=etcd_bin, binary=etcd_binary)
        )
    from etcdforge.runtime.units import SystemdServices

    return Runtime(spec, ws, hosts, SystemdServices(spec, hosts))


@asynccontextmanager
async def open_runtime(
    spec: ClusterSpec,
    ws: Workspace,
    members: Sequence[str] | None = None,
    *,
    accept_new_host_keys: bool = False,
    required: bool = True,
    etcd_bin: str | None = None,
    etcd_binary: Path | None = None,
) -> AsyncIterator[Runtime]:
    """The runtime for ``spec``'s mode, with the hosts of ``members`` (default: all) connected.

    Local mode: a member started by this run runs ``etcd_binary`` (resolved from ``etcd_bin``, the
    spec and PATH when not given, and only when a member is started)."""
    async with connect_hosts(
        spec, ws, members, accept_new_host_keys=accept_new_host_keys, required=required
    ) as hosts:
        yield make_runtime(spec, ws, hosts, etcd_bin=etcd_bin, etcd_binary=etcd_binary)
