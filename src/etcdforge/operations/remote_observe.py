"""Observe real hosts (read only): managed files, unit state, data dir, binary — and the cluster itself.

Each fact is a command plus a pure parser; the parsers are unit-tested on recorded output. All hosts are
observed concurrently, and on one host the independent commands run concurrently over one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from etcdforge.hosts.base import Host
from etcdforge.operations import remote_layout as layout

#: non-secret managed files whose content is read so the plan can show a diff
TEXT_FILES = (layout.CONFIG, layout.UNIT)


@dataclass(frozen=True)
class FileState:
    sha256: str
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class HostObserved:
    member: str
    etcd_user: bool
    files: Mapping[str, FileState | None]
    dirs: Mapping[str, tuple[int, str, str] | None]
    texts: Mapping[str, bytes | None]
    active_state: str  # systemd ActiveState: active, inactive, failed, activating, …
    unit_file_state: str  # enabled, disabled, "" (no unit)
    has_data: bool
    binary_sha256: str | None
    binary_version: str | None
    #: TCP listeners on the host: (address, port, process name)
    listeners: tuple[tuple[str, int, str], ...] = ()

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "activating", "reloading")


def parse_stat(output: str) -> dict[str, tuple[int, str, str]]:
    """``stat -c '%a %U %G %n'`` lines -> {path: (mode, owner, group)} (paths may contain spaces)."""
    out: dict[str, tuple[int, str, str]] = {}
    for line in output.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4:
            out[parts[3]] = (int(parts[0], 8), parts[1], parts[2])
    return out


def parse_systemctl_show(output: str) -> dict[str, str]:
    """``systemctl show -p A -p B`` output (KEY=VALUE lines) -> dict."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_listeners(output: str) -> tuple[tuple[str, int, str], ...]:
    """``ss -ltnpH`` lines -> (local address, port, process name or "?")."""
    out = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        if not port.isdigit():
            continue
        process = "?"
        rest = " ".join(fields[5:])
        if '(("' in rest:
            process = rest.split('(("', 1)[1].split('"', 1)[0]
        out.append((address.strip("[]"), int(port), process))
    return tuple(out)


def parse_etcd_version(output: str) -> str | None:
    for line in output.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return None


async def observe_host(
    host: Host, member: str, paths: Sequence[str], *, dirs: Sequence[str], data_dir: str, binary: str
) -> HostObserved:
    """Everything ``plan`` needs to know about one host, in a few concurrent commands."""
    all_paths = [*paths, *dirs, binary]
    text_task = asyncio.ensure_future(asyncio.gather(*(host.read_file(p) for p in TEXT_FILES)))
    listen_task = asyncio.ensure_future(host.run(["ss", "-ltnpH"], check=False))
    sums, stat, show, user, data, version = await asyncio.gather(
        host.sha256(all_paths),
        host.run(["stat", "-c", "%a %U %G %n", *all_paths], check=False),
        host.run(
            [
                "systemctl",
                "show",
                layout.UNIT_NAME,
                "-p",
                "ActiveState",
                "-p",
                "UnitFileState",
                "-p",
                "LoadState",
            ],
            check=False,
        ),
        host.run(["id", "-u", layout.ETCD_USER], check=False),
        host.run(["test", "-d", f"{data_dir.rstrip('/')}/member"], check=False),
        host.run([binary, "--version"], check=False),
    )
    texts = await text_task
    listening = await listen_task
    modes = parse_stat(stat.stdout.decode(errors="replace"))
    files: dict[str, FileState | None] = {}
    for path in paths:
        digest = sums.get(path)
        mode = modes.get(path)
        files[path] = None if digest is None or mode is None else FileState(digest, *mode)
    dir_states = {d: modes.get(d) for d in dirs}
    unit = parse_systemctl_show(show.stdout.decode(errors="replace"))
    loaded = unit.get("LoadState") == "loaded"
    return HostObserved(
        member=member,
        etcd_user=user.exit_status == 0,
        files=files,
        dirs=dir_states,
        texts=dict(zip(TEXT_FILES, texts, strict=True)),
        active_state=unit.get("ActiveState", "inactive") if loaded else "inactive",
        unit_file_state=unit.get("UnitFileState", "") if loaded else "",
        has_data=data.exit_status == 0,
        binary_sha256=sums.get(binary),
        binary_version=parse_etcd_version(version.stdout.decode(errors="replace"))
        if version.exit_status == 0
        else None,
        listeners=parse_listeners(listening.stdout.decode(errors="replace")),
    )


@dataclass(frozen=True)
class ClusterObserved:
    """What etcd says, if any member answers: names and IDs of members, and who leads."""

    reachable: bool
    members: tuple[tuple[int, str, tuple[str, ...], bool], ...] = ()  # (id, name, peer_urls, is_learner)
    leader_id: int | None = None
    healthy: Mapping[str, bool] | None = None  # client URL -> healthy

    def member_id(self, name: str) -> int | None:
        for mid, mname, _, _ in self.members:
            if mname == name:
                return mid
        return None

    def knows_peer_url(self, url: str) -> bool:
        return any(url in urls for _, _, urls, _ in self.members)
