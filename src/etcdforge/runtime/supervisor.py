"""A small process supervisor for local mode: etcd members as detached processes on this machine.

Each member has a pid file and a log file in its workspace directory. A pid file records the PID *and*
the process start time (``/proc/PID/stat`` field 22), so a recycled PID is never mistaken for our
member and we never signal a process we did not start. A member process that a killed run started but
never recorded is recognised by its command line (``--config-file`` in the member's directory).

Members run in their own session (``start_new_session``), so they outlive the ``etcdforge up`` that
started them and a Ctrl-C in the terminal does not reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from etcdforge.fsutil import atomic_write

LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_time: int


def _proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it does not exist or is a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def read_record(pid_file: Path) -> ProcessRecord | None:
    try:
        pid_text, start_text = pid_file.read_text().split()
        return ProcessRecord(pid=int(pid_text), start_time=int(start_text))
    except (FileNotFoundError, ValueError):
        return None


def alive(record: ProcessRecord | None) -> bool:
    return record is not None and _proc_start_time(record.pid) == record.start_time


def untracked(pid_file: Path) -> ProcessRecord | None:
    """A live member process that no pid file records: one that a run killed between starting it and
    writing ``pid_file`` left behind. Known by its argv: ``--config-file`` naming a file in the pid
    file's (the member's) directory, resolved against the process's own working directory."""
    member_dir = pid_file.parent.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if b"--config-file" not in args:
                continue
            config = os.fsdecode(args[args.index(b"--config-file") + 1])
            cwd = os.readlink(entry / "cwd")
        except (OSError, IndexError):
            continue
        if (Path(cwd) / config).resolve().parent == member_dir:
            start_time = _proc_start_time(int(entry.name))
            if start_time is not None:
                return ProcessRecord(int(entry.name), start_time)
    return None


def current(pid_file: Path) -> ProcessRecord | None:
    """The member's live process: the one ``pid_file`` records, else an untracked one, else None."""
    record = read_record(pid_file)
    if record is not None and alive(record):
        return record
    return untracked(pid_file)


def running_pid(pid_file: Path) -> int | None:
    """PID of the member's live process (recorded in ``pid_file``, or untracked), or None."""
    record = current(pid_file)
    return record.pid if record is not None else None


@dataclass
class Started:
    """A process started by this run (we are its parent until we exit)."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def exited(self) -> int | None:
        return self.process.poll()


def start(name: str, argv: list[str], *, log_file: Path, pid_file: Path, cwd: Path) -> Started:
    """Start ``argv`` detached, appending stdout/stderr to ``log_file``; record it in ``pid_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        # An environment without ETCD_* variables: etcd treats a flag given twice (flag + env) as fatal,
        # and with --config-file it ignores them anyway; better not to surprise.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)
    start_time = _proc_start_time(process.pid)
    atomic_write(pid_file, f"{process.pid} {start_time or 0}\n".encode(), 0o600)
    return Started(name=name, process=process, log_file=log_file)


async def stop(
    pid_file: Path,
    *,
    timeout: float = 20.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """SIGTERM the recorded process (etcd then hands over leadership and exits), SIGKILL after ``timeout``.

    Returns True if a process was stopped, False if none was running. Removes the pid file.
    """
    record = current(pid_file)
    if record is None:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = clock() + timeout
    while alive(record):
        if clock() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            deadline = clock() + 5.0
        _reap(record.pid)
        await sleep(0.02)
    _reap(record.pid)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (started by this very run)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(log_file: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with log_file.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
