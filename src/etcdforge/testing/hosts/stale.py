"""Ownership of harness resources across runs: the registry of live harnesses and :func:`cleanup_stale`.

Role: record which process owns each harness instance (one JSON file per instance under
:data:`REGISTRY_DIR`), and remove the leftovers (containers, overlay mounts, links, netns, registry files)
of instances whose owner is dead.

Invariants:

- An instance is live while its registry file names a process that is alive *and* has the recorded start
  time (so a reused PID does not keep a dead run's leftovers alive).
- :func:`cleanup_stale` touches only names of the harness's shape (``<prefix><6 hex><suffix>``) whose
  instance is not live: concurrent runs with the same prefix never tear each other down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .base import ID_HEX, RESOURCE_SUFFIX, run_local
from .network import delete_link
from .processes import alive, kill_container, start_time
from .rootfs import mounts, unmount

REGISTRY_DIR = Path("/run/etcdforge-testhosts")
#: held (flock) while a harness checks that its subnet is free and claims it
SUBNET_LOCK = REGISTRY_DIR / ".subnet.lock"


def registry_file(instance: str) -> Path:
    """Where the registry records ``instance``'s owner."""
    return REGISTRY_DIR / f"{instance}.json"


def register(instance: str, workdir: Path) -> None:
    """Record this process (PID and start time) as the owner of ``instance``."""
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    registry_file(instance).write_text(
        json.dumps({"pid": os.getpid(), "start": start_time(os.getpid()), "workdir": str(workdir)})
    )


def live_instances(prefix: str) -> set[str]:
    """The instances with ``prefix`` whose owner process still runs."""
    live = set()
    for entry in REGISTRY_DIR.glob(f"{prefix}*.json") if REGISTRY_DIR.is_dir() else ():
        try:
            data = json.loads(entry.read_text())
            if alive(int(data["pid"])) and start_time(int(data["pid"])) == data["start"]:
                live.add(entry.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return live


def cleanup_stale(prefix: str = "efh") -> list[str]:
    """Remove what earlier, now dead, harness runs with ``prefix`` left behind; returns what was removed.

    Resources of a live harness (its owner process still runs) are left alone, so concurrent test runs
    with the same prefix do not tear each other down.
    """
    pattern = re.compile(rf"^({re.escape(prefix)}[0-9a-f]{{{ID_HEX}}}){RESOURCE_SUFFIX}$")
    live = live_instances(prefix)
    removed: list[str] = []

    def stale(name: str) -> bool:
        match = pattern.match(name)
        return match is not None and match.group(1) not in live

    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            args = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or not args[0].endswith(b"systemd-nspawn"):
            continue
        machines = [a[len(b"--machine=") :].decode() for a in args if a.startswith(b"--machine=")]
        if machines and stale(machines[0]):
            pid = int(proc_dir.name)
            kill_container(pid, 10)
            removed.append(f"process {pid} ({machines[0]})")
    for fstype, point in mounts():
        parts = Path(point).parts
        if fstype == "overlay" and len(parts) >= 2 and parts[-1] == "root" and stale(parts[-2]):
            problem = unmount(Path(point))
            removed.append(f"mount {point}" + (f" ({problem})" if problem else ""))
            if problem is None:
                shutil.rmtree(Path(point).parent, ignore_errors=True)
    for name in sorted(os.listdir("/sys/class/net"), key=lambda n: n.endswith("br")):
        if stale(name):
            problem = delete_link(name)
            removed.append(f"link {name}" + (f" ({problem})" if problem else ""))
    netns_out = run_local(["ip", "netns", "list"], check=False).stdout
    for name in (line.split()[0] for line in netns_out.splitlines() if line.strip()):
        if stale(name):
            run_local(["ip", "netns", "del", name], check=False)
            removed.append(f"netns {name}")
    for entry in REGISTRY_DIR.glob(f"{prefix}*.json") if REGISTRY_DIR.is_dir() else ():
        if pattern.match(entry.stem + "br") and entry.stem not in live:
            entry.unlink(missing_ok=True)
            removed.append(f"registry {entry.name}")
    return removed
