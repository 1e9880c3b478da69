"""OpenSSH known_hosts checking with OpenSSH's three outcomes: known, unknown, changed.

asyncssh's own known_hosts handling cannot tell "unknown" from "changed", and falls back from a
``[host]:port`` entry to a bare ``host`` one (OpenSSH does not), so we match line by line ourselves,
using asyncssh's parser for each line (hashed ``|1|`` entries, patterns and negations included). Knowing
the line numbers lets a changed-key error say which line holds the old key.

Accepting a new key (``accept-new``) appends one line: under an exclusive lock on a sibling lock file,
re-read, append, atomic rename, so concurrent connects (this process or another) never lose a line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from etcdforge.fsutil import atomic_write
from etcdforge.hosts.sshlib import asyncssh

DEFAULT_SSH_PORT = 22


class Verdict(Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KnownKey:
    """One key recorded for the host, with its 1-based line number in the file."""

    line: int
    key: asyncssh.SSHKey
    revoked: bool


@dataclass(frozen=True)
class HostKeyCheck:
    verdict: Verdict
    fingerprint: str  # of the key the server presented
    lines: tuple[int, ...]  # the lines that decided it (the old keys for CHANGED)
    old_fingerprints: tuple[str, ...]


def host_entry(host: str, port: int) -> str:
    """The host field OpenSSH writes: ``host`` on port 22, else ``[host]:port``."""
    return host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` and ssh show it."""
    return key.get_fingerprint("sha256")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _matches(entry: asyncssh.SSHKnownHosts, host: str, addr: str, port: int) -> list[asyncssh.SSHKey]:
    """Keys of one parsed line that apply to host/addr/port, without asyncssh's port fallback.

    With ``port=None`` asyncssh matches the names as given, so for a non-default port we pass the
    bracketed names ourselves and no bare-host entry can match.
    """
    # By the name the spec gives only, never by the address it resolves to (OpenSSH's CheckHostIP=no):
    # a line recorded for an address that DNS or /etc/hosts now gives to this name (another machine's
    # old address, say) must not vouch for this host. ``addr`` is kept for the caller's messages.
    name = host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"
    trusted, _ca, revoked, *_ = entry.match(name, "", None)
    return [*trusted, *revoked]


def known_keys(path: Path, host: str, addr: str, port: int) -> list[KnownKey]:
    """The keys ``path`` records for the host (by the spec's name for it), with their line numbers."""
    found: list[KnownKey] = []
    for number, line in _lines(path):
        try:
            entry = asyncssh.import_known_hosts(line)
        except (ValueError, asyncssh.KeyImportError):
            continue  # like OpenSSH: a line we cannot parse is skipped, not fatal
        revoked = line.startswith("@revoked")
        if line.startswith("@cert-authority"):
            continue  # host certificates are not supported: CA lines never vouch for a plain key
        keys = {key.public_data: key for key in _matches(entry, host, addr, port)}
        found.extend(KnownKey(number, key, revoked) for key in keys.values())
    return found


def check_host_key(known: Sequence[KnownKey], key: asyncssh.SSHKey) -> HostKeyCheck:
    """OpenSSH's decision: revoked beats everything; a recorded key that differs means CHANGED."""
    fp = fingerprint(key)
    data = key.public_data
    revoked = tuple(k.line for k in known if k.revoked and k.key.public_data == data)
    if revoked:
        return HostKeyCheck(Verdict.REVOKED, fp, revoked, ())
    trusted = [k for k in known if not k.revoked]
    same = tuple(k.line for k in trusted if k.key.public_data == data)
    if same:
        return HostKeyCheck(Verdict.KNOWN, fp, same, ())
    if trusted:
        return HostKeyCheck(
            Verdict.CHANGED,
            fp,
            tuple(dict.fromkeys(k.line for k in trusted)),
            tuple(dict.fromkeys(fingerprint(k.key) for k in trusted)),
        )
    return HostKeyCheck(Verdict.UNKNOWN, fp, (), ())


def preferred_algorithms(known: Sequence[KnownKey]) -> list[str]:
    """Host key algorithms to offer first: those of the keys we already know (as OpenSSH does),
    so a host with an RSA key on record is not reported as changed because it also has ed25519."""
    algs: dict[str, None] = {}
    for k in known:
        if not k.revoked:
            for alg in k.key.sig_algorithms:
                algs.setdefault(alg.decode(), None)
    return list(algs)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_known_host(path: Path, host: str, port: int, key: asyncssh.SSHKey) -> None:
    """Record ``key`` for host/port (no-op if already there), keeping every existing line."""
    line = f"{host_entry(host, port)} {key.export_public_key('openssh').decode().strip()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            old = path.read_bytes()
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            old, mode = b"", 0o644
        if line.encode() in old.splitlines(keepends=True) or line.rstrip("\n").encode() in old.splitlines():
            return
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write(path, old + line.encode(), mode)
