"""``etcdforge init``: write a commented ``cluster.yaml`` for the user's own hosts.

The text is generated with comments a person can follow, then parsed back with the strict loader and
validated, so ``init`` can never write a spec that ``plan`` would reject.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from etcdforge.errors import SpecError, WorkspaceError
from etcdforge.fsutil import atomic_write, ensure_dir
from etcdforge.spec import SPEC_FILE, load_spec_text

_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


def _q(value: str) -> str:
    """A YAML scalar that is always read back as this exact string (JSON strings are valid YAML)."""
    return json.dumps(value)


def parse_members(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise SpecError(f"--member {item!r}: expected NAME=ADDRESS, e.g. etcd1=192.168.10.80")
        out.append((name.strip(), address.strip()))
    return out


def render_spec(
    *,
    name: str,
    members: Sequence[tuple[str, str]],
    ssh_user: str,
    ssh_port: int,
    ssh_key: Path | None,
    known_hosts: Path | None,
    sudo: bool,
    etcd_binary: str,
    etcd_sha256: str | None,
    token: str,
    system_binary: str = "/usr/bin/etcd",
    client_port: int = 2379,
    peer_port: int = 2380,
    data_dir: str = "/var/lib/etcd",
    etcd_tuning: Sequence[str] = (
        "heartbeat_interval_ms: 100     # ~ round-trip time between members; election >= 5 x heartbeat",
        "election_timeout_ms: 1000",
    ),
    pki_lines: Sequence[str] | None = None,
    header: Sequence[str] = (
        "# etcdforge cluster spec for your own hosts.",
        "# Next: `etcdforge plan --dir DIR` shows what would change; `etcdforge apply --dir DIR` does it.",
    ),
) -> str:
    """The commented spec text. ``init`` uses the defaults; ``adopt`` passes what it observed (ports,
    data dir, binary, tuning lines of the etcd section, the imported PKI's lines of the pki section)."""
    if etcd_binary == "system":
        etcd = (
            "  source: system              # etcd is already installed on the hosts\n"
            f"  binary: {_q(system_binary)}\n"
        )
    elif _VERSION.match(etcd_binary):
        if not etcd_sha256:
            raise SpecError(
                f"--etcd-binary {etcd_binary}: downloading a release needs --etcd-sha256 "
                "(the tarball's SHA-256)"
            )
        etcd = (
            "  source: download            # an official release, verified, cached here, uploaded\n"
            f"  version: {_q(etcd_binary.lstrip('v'))}\n"
            f"  sha256: {_q(etcd_sha256)}\n"
            "  # download_url: a mirror, with {version} in it\n"
        )
    else:
        path = Path(etcd_binary).expanduser()
        if not path.is_file():
            raise SpecError(f"--etcd-binary {etcd_binary!r}: not 'system', a version, or an existing file")
        etcd = (
            "  source: upload              # copied from this machine to /usr/local/bin on each host\n"
            f"  binary: {_q(str(path.resolve()))}\n"
        )
    lines = [
        *header,
        "version: 1",
        f"name: {_q(name)}",
        "mode: hosts",
        f"token: {_q(token)}   # initial-cluster-token: unique per cluster",
        "",
        "# How to reach the hosts. Host keys are verified against known_hosts; pass",
        "# --accept-new-host-keys to plan/apply once to record unknown ones",
        "# (a changed key is always refused).",
        "ssh:",
        f"  user: {_q(ssh_user)}",
        f"  port: {ssh_port}",
    ]
    if ssh_key is not None:
        lines.append(f"  identity_file: {_q(str(ssh_key.expanduser().resolve()))}")
    lines.append(
        f"  known_hosts: {_q(str(known_hosts.expanduser().resolve()) if known_hosts else 'known_hosts')}"
    )
    lines.append(f"  sudo: {'true' if sudo else 'false'}   # run commands with `sudo -n` (non-root user)")
    lines += [
        "",
        "etcd:",
        etcd.rstrip("\n"),
        f"  client_port: {client_port}",
        f"  peer_port: {peer_port}",
        f"  data_dir: {_q(data_dir)}        # never wiped by etcdforge",
        *(f"  {line}" for line in etcd_tuning),
        "",
        "pki:",
        *(
            pki_lines
            if pki_lines is not None
            else (
                "  key: {algo: ecdsa, size: 256}  # or {algo: rsa, size: 2048..8192}",
                "  ca_expiry: 87600h              # Go durations, as cfssl: hours, no days",
                "  cert_expiry: 8760h",
                "  # subject: {C: CN, ST: ShangHai, L: ShangHai, O: etcd, OU: ops}",
                "  clients: [admin]               # client certificates; admin is the tool's own",
            )
        ),
        "",
        "# One certificate per member with its address (and optional dns_names) plus 127.0.0.1/localhost.",
        "members:",
    ]
    for member, address in members:
        lines.append(f"  - {{name: {_q(member)}, address: {_q(address)}}}")
    return "\n".join(lines) + "\n"


def write_spec(
    directory: Path,
    *,
    members: Sequence[str],
    name: str | None,
    ssh_user: str,
    ssh_port: int,
    ssh_key: Path | None,
    known_hosts: Path | None,
    sudo: bool,
    etcd_binary: str,
    etcd_sha256: str | None,
    force: bool = False,
) -> Path:
    from etcdforge.verbs.up.run import workspace_lock
    from etcdforge.workspace import Workspace

    with workspace_lock(Workspace(directory)):  # --force must not overwrite a spec another command uses
        path = directory / SPEC_FILE
        if path.exists() and not force:
            raise WorkspaceError(f"{path} already exists", hint="edit it, or pass --force to overwrite it")
        cluster = name or re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "etcd"
        text = render_spec(
            name=cluster,
            members=parse_members(members),
            ssh_user=ssh_user,
            ssh_port=ssh_port,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            sudo=sudo,
            etcd_binary=etcd_binary,
            etcd_sha256=etcd_sha256,
            token=f"{cluster}-{secrets.token_hex(6)}",
        )
        load_spec_text(text, source=str(path))  # never write a spec that would not load
        ensure_dir(directory)
        atomic_write(path, text.encode(), 0o644)
        return path
