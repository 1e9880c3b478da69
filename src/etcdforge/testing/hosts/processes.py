"""The test hosts' processes: starting ``systemd-nspawn``, finding a container's PID 1, killing it.

Role: everything that reads ``/proc`` or signals a process for the harness.

Invariants:

- PID helpers read ``/proc/<pid>/stat`` and return ``None`` (or ``False``) for a process that is gone,
  never raise; a zombie counts as gone.
- Killing a container means SIGKILL to its PID 1 (the child of ``systemd-nspawn`` in a new PID
  namespace), which ends the whole namespace; ``systemd-nspawn`` itself is SIGKILLed only if it does not
  exit within the grace period.
- The only machine-wide setting touched: ``fs.inotify.max_user_instances`` is raised (never lowered) to
  :data:`INOTIFY_INSTANCES`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from .base import TestHost

INOTIFY_INSTANCES = 8192


def ensure_inotify_instances(wanted: int) -> None:
    """Raise fs.inotify.max_user_instances to ``wanted`` if lower (never lower it).

    Every container's systemd, journald, logind … takes inotify instances from the one per-uid pool of
    root; Debian's default of 128 runs out at about a dozen hosts (systemd then fails with "Too many open
    files" as PID 1 and the container exits).
    """
    knob = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(knob.read_text()) < wanted:
        knob.write_text(f"{wanted}\n")


def ppid(pid: int) -> int | None:
    """The parent PID of ``pid`` (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None if it is gone); with the PID it names one
    process even across PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_namespace(pid: int) -> str | None:
    """The PID namespace of ``pid`` (as ``readlink /proc/PID/ns/pid`` names it; None if it is gone)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and ppid(int(p.name)) == pid]


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait up to ``timeout`` for ``pid`` to end (reaping it through ``proc`` when it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not alive(pid):
            return True
        time.sleep(0.05)
    return False


def kill(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; a process that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_container(pid: int, grace: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL the container PID 1 under the ``systemd-nspawn`` process ``pid``; SIGKILL ``pid`` too if it
    has not exited ``grace`` seconds later (``proc``: its Popen, when it is our child)."""
    for child in children(pid):  # the container's PID 1: killing it ends its PID namespace
        kill(child, signal.SIGKILL)
    if not wait_gone(pid, grace, proc):
        kill(pid, signal.SIGKILL)
        wait_gone(pid, 5, proc)


def spawn_nspawn(host: TestHost, machine: str) -> subprocess.Popen[bytes]:
    """Start ``systemd-nspawn --boot`` on ``host``'s root in its netns; console appended to
    ``console.log`` next to the root."""
    log = (host.root.parent / "console.log").open("ab")
    argv = [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--console=passive",
        "--settings=no", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
        "-D", str(host.root), f"--network-namespace-path=/run/netns/{host.netns}",
        f"--machine={machine}", "--boot",
    ]  # fmt: skip
    with log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def wait_for_leader(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """The PID of the container's PID 1 under ``proc`` once it exists; None if ``proc`` exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        # PID 1 is the child in a new PID namespace (a short-lived helper child precedes it)
        leaders = [c for c in children(proc.pid) if pid_namespace(c) not in (None, pid_namespace(proc.pid))]
        if leaders:
            return leaders[0]
        time.sleep(0.02)
    return None
