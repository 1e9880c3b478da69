"""A test host's root filesystem: a copy-on-write overlay of ``/`` made into a distinct, quiet host.

Role: mount, prepare and remove each host's overlay (``<base>/{up,work,root}``), and read the mount table.

Invariants:

- The lower layer is the machine's own ``/`` and is never written: every change lands in ``<base>/up``.
- SSH logins register no logind session (no per-user systemd to start and stop around each login).
- Each host gets its own hostname, machine-id and ssh host keys; ``root`` and ``deploy`` (passwordless
  sudo) and ``nosudo`` accept the harness's client key; keys and sudoers are created with their final
  mode (0600/0440), never chmod-ed after.
- A directory is never removed while it (or anything below it) is still a mount point, so teardown can
  never delete through a live overlay into ``/``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from .base import TestHost, run_local

#: units the image enables that only cost boot time (or reach for the network) inside a test host
MASKED_UNITS = (
    "postgresql.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "man-db.timer",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
)
#: services a test host keeps enabled from this machine's multi-user.target
KEPT_SERVICES = frozenset({"ssh.service"})
SSHD_DROPIN = "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"


def mounts() -> list[tuple[str, str]]:
    """(fstype, mountpoint) of every mount in our mount namespace (octal escapes decoded)."""
    result = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        result.append((fields[2], point))
    return result


def unmount(path: Path) -> str | None:
    """Unmount ``path`` if it is a mount point (lazily if it is busy); a problem string on failure."""
    if not any(point == str(path) for _, point in mounts()):
        return None
    if run_local(["umount", str(path)], timeout=30, check=False).returncode == 0:
        return None
    lazy = run_local(["umount", "-l", str(path)], timeout=30, check=False)
    return None if lazy.returncode == 0 else f"umount {path}: {lazy.stderr.strip()}"


def remove_dir(path: Path) -> str | None:
    """Remove the directory tree ``path`` unless a mount remains in it (then a problem string)."""
    # never delete through a live overlay: the directory must not hold a mount any more
    if any(point == str(path) or point.startswith(f"{path}/") for _, point in mounts()):
        return f"not removing {path}: still mounted"
    shutil.rmtree(path, ignore_errors=True)
    return None


def prepare_root(host: TestHost, peers: Sequence[TestHost], client_key: Path) -> None:
    """Mount the overlay and make it a distinct host: identity, keys, users, quiet boot.

    ``peers`` (all hosts, in index order) go into ``/etc/hosts``; ``client_key``'s ``.pub`` is authorized.
    """
    base = host.root.parent
    for sub in ("up", "work", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    options = f"lowerdir=/,upperdir={base / 'up'},workdir={base / 'work'}"
    run_local(["mount", "-t", "overlay", "overlay", "-o", options, str(host.root)])
    root = host.root
    etc = root / "etc"
    # a test host runs sshd and what the tests start, not the services this machine has enabled (etcd,
    # Prometheus, PostgreSQL, ...): each would start in every host
    for wanted in (etc / "systemd/system/multi-user.target.wants").glob("*.service"):
        if wanted.name not in KEPT_SERVICES:
            wanted.unlink()
    for unit in MASKED_UNITS:
        target = etc / "systemd/system" / unit
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/null")
    (etc / "hostname").write_text(f"{host.name}\n")
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    hosts_lines = [f"{peer.address}\t{peer.name}\n" for peer in peers]
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n" + "".join(hosts_lines))
    for old in (etc / "ssh").glob("ssh_host_*"):
        old.unlink()
    run_local(["ssh-keygen", "-A", "-f", str(root)], timeout=60)
    (etc / "ssh/sshd_config.d/etcdforge-test.conf").write_text(SSHD_DROPIN)
    without_logind_sessions(etc / "pam.d/common-session")
    plain_shell(root / "root")
    public_key = client_key.with_suffix(".pub").read_text()
    authorize(root, "root", public_key)
    for user in ("deploy", "nosudo"):
        run_local(["useradd", "--root", str(root), "-m", "-s", "/bin/bash", "-p", "*", user])
        authorize(root, user, public_key)
    sudoers = etc / "sudoers.d/deploy"
    sudoers.parent.mkdir(mode=0o755, exist_ok=True)
    fd = os.open(sudoers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write("deploy ALL=(ALL) NOPASSWD:ALL\n")


#: root's shell start-up files on a test host: a plain server's (Debian's defaults, nothing else)
PLAIN_BASHRC = "# ~/.bashrc of an etcdforge test host: a plain server's\n"
PLAIN_PROFILE = 'if [ "$BASH" ] && [ -f ~/.bashrc ]; then . ~/.bashrc; fi\n'


def plain_shell(home: Path) -> None:
    """Give root a plain server's start-up files instead of the machine's. sshd runs every command
    through ``bash -c``, which reads ``~/.bashrc``; a developer's or CI machine's runs ``pyenv init``,
    whose ``pyenv rehash`` rebuilds shims on every SSH command (seconds of CPU on a loaded machine) under
    a lock file that a login waits up to 60 s for while another holds it (or a killed one left it)."""
    if not home.is_dir():
        return
    (home / ".bashrc").write_text(PLAIN_BASHRC)
    (home / ".profile").write_text(PLAIN_PROFILE)
    (home / ".bash_profile").unlink(missing_ok=True)


def without_logind_sessions(pam_file: Path) -> None:
    """Drop ``pam_systemd`` from the host's PAM session stack: an SSH login then registers no logind
    session, so no per-user systemd (``user@0.service``) is started and stopped around each login. In a
    container that manager's stop can hang for minutes ("Processes still around after final SIGKILL",
    cgroup kill refused with EIO), and every login waits for it in PAM: commands time out and open
    connections are dropped. Nothing etcdforge does needs a logind session (seen in CI, 2026-12-02)."""
    if not pam_file.is_file():
        return
    lines = pam_file.read_text().splitlines(keepends=True)
    pam_file.write_text("".join(line for line in lines if "pam_systemd.so" not in line))


def authorize(root: Path, user: str, public_key: str) -> None:
    """Make ``public_key`` the only authorized key of ``user`` in the host at ``root``."""
    entry = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.split(":")[0] == user
    )
    uid, gid, home = int(entry[2]), int(entry[3]), root / entry[5].lstrip("/")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(public_key)
    for path in (ssh_dir, keys):
        os.chown(path, uid, gid)


def host_key(host: TestHost) -> str:
    """``host``'s ed25519 public host key as ``"<type> <base64>"`` (a known_hosts entry minus the name)."""
    key_type, key = (host.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{key_type} {key}"
