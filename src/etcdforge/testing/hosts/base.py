"""Shared vocabulary of the test-host harness: its errors, the host record, and the one command runner.

Role: the bottom of the ``hosts`` package; every other module here imports from it and it imports none
of them.

Invariants:

- Every external command goes through :func:`run_local`: an argv list (never a shell string) with a
  bounded timeout; a timeout or (with ``check``) a non-zero exit becomes a :class:`HostHarnessError`
  naming the command.
- Harness resource names are ``<prefix><ID_HEX hex digits>`` plus a suffix matching
  :data:`RESOURCE_SUFFIX`; :func:`~etcdforge.testing.hosts.stale.cleanup_stale` relies on that shape.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

DEFAULT_SUBNET = "10.213.77.0/24"
REQUIRED_TOOLS = ("systemd-nspawn", "sshd", "ssh", "ssh-keygen", "ip", "mount", "umount", "useradd")

#: hex digits of the per-harness id in every resource name
ID_HEX = 6
#: what follows ``<prefix><id>`` in a resource name: bridge, netns, veth, machine/overlay directory
RESOURCE_SUFFIX = r"(?:br|n\d+|v\d+|-h\d+)"


class HostHarnessError(RuntimeError):
    """The test hosts could not be set up, reached or faulted as asked; the message says which and why."""


class SubnetInUseError(HostHarnessError):
    """The requested subnet overlaps an existing route: pick another (``subnet=``)."""


@dataclass(frozen=True)
class TestHost:
    """One booted (or stopped) test host. ``nspawn_pid``/``leader_pid`` are 0 while it is stopped."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    address: str
    ssh_port: int
    root: Path
    nspawn_pid: int
    leader_pid: int
    index: int
    netns: str
    veth: str


def missing_prerequisites() -> list[str]:
    """Why host tests cannot run here (not root, tools missing); empty when they can."""
    problems = [] if os.geteuid() == 0 else ["not running as root"]
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(
            f"missing tools: {', '.join(missing)} (apt-get install systemd-container openssh-server iproute2)"
        )
    return problems


def run_local(
    argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on this machine, capturing text output; raise :class:`HostHarnessError` on a timeout
    and, when ``check``, on a non-zero exit."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input
        )
    except subprocess.TimeoutExpired as exc:
        raise HostHarnessError(f"{shlex.join(argv)} timed out after {timeout:g}s") from exc
    if check and proc.returncode != 0:
        raise HostHarnessError(
            f"{shlex.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc
