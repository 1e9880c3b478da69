"""Local mode's service manager: each member is a supervised etcd process of the workspace.

A member runs ``etcd --config-file members/NAME/etcd.conf.yml`` with a pid file and a log file in its
directory. A new start uses the binary this run resolved (``--etcd-bin``, the spec, PATH); a restart
keeps the binary the member runs now (a restart must never switch etcd versions).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from etcdforge import binaries
from etcdforge.errors import BinaryError, MemberStartError
from etcdforge.fsutil import atomic_write, ensure_dir
from etcdforge.hosts.base import Host
from etcdforge.runtime import supervisor
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace

#: in a member's directory: the etcd binary it runs since an upgrade switched it, and the one before
BINARY_FILE = "etcd-binary"
PREVIOUS_FILE = "etcd-binary.previous"


def resolve_binary(spec: ClusterSpec, etcd_bin: str | None) -> tuple[binaries.Binary, tuple[str, ...]]:
    """The etcd binary a local member starts with (``--etcd-bin``, the spec's, PATH), checked against
    the spec's version; returns it with warnings (a known-bad version is fine for local development)."""
    binary = binaries.probe(binaries.find_tool("etcd", etcd_bin, spec.etcd.binary))
    if spec.etcd.version and binary.version_str != spec.etcd.version:
        raise BinaryError(
            f"{binary.path} is etcd {binary.version_str}, but the spec asks for {spec.etcd.version}",
            hint="pass --etcd-bin with the right binary or change etcd.version",
        )
    problem = binaries.version_problem(binary.version, production=False)
    if problem and binary.version[:2] < (3, 4):
        raise BinaryError(problem)
    return binary, ((problem,) if problem else ())


class ProcessServices:
    """Implements :class:`~etcdforge.runtime.services.ServiceManager` with local processes."""

    poll_interval = 0.05
    health_call_timeout = 0.5

    def __init__(
        self,
        spec: ClusterSpec,
        ws: Workspace,
        host: Host,
        *,
        etcd_bin: str | None = None,
        binary: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self.ws = ws
        self.host = host
        self.etcd_bin = etcd_bin
        self.clock = clock
        self.sleep = sleep
        self._binary = binary
        #: processes started by this run, so a failed `up` can stop exactly those
        self.started: list[supervisor.Started] = []

    def binary(self) -> Path:
        if self._binary is None:
            self._binary = resolve_binary(self.spec, self.etcd_bin)[0].path
        return self._binary

    def argv(self, member: str, binary: Path | str) -> list[str]:
        return [str(binary), "--config-file", self.ws.member_paths(member).config]

    def member_binary(self, member: str) -> Path:
        """The binary ``member`` starts with: the one an upgrade switched it to, else this run's."""
        chosen = self.ws.member_dir(member) / BINARY_FILE
        if chosen.is_file():
            return Path(chosen.read_text().strip())
        return self.binary()

    async def start(self, members: Sequence[str]) -> str:
        notes = [f"{m}: {self._start(m, self.member_binary(m))}" for m in members]
        return "; ".join(notes)

    async def switch_binary(self, member: str, binary: str | None, *, timeout: float) -> str:
        chosen = self.ws.member_dir(member) / BINARY_FILE
        previous = self.ws.member_dir(member) / PREVIOUS_FILE
        if binary is None:
            if not previous.is_file():
                raise BinaryError(f"{member} has no previous etcd binary to go back to")
            binary = previous.read_text().strip()
        target = str(Path(binary).resolve())
        running = self.running_binary(member)
        if running is not None and str(Path(running).resolve()) == target:
            atomic_write(chosen, target.encode() + b"\n", 0o600)
            return f"already runs {target}"
        current = running or (chosen.read_text().strip() if chosen.is_file() else str(self.binary()))
        if str(Path(current).resolve()) != target:
            atomic_write(previous, str(Path(current).resolve()).encode() + b"\n", 0o600)
        atomic_write(chosen, target.encode() + b"\n", 0o600)
        await self.stop(member)
        return f"{self._start(member, target)} ({target})"

    def _start(self, member: str, binary: Path | str) -> str:
        pid_file = self.ws.member_pid(member)
        if supervisor.running_pid(pid_file) is not None:
            return "already running"
        ensure_dir(self.ws.member_dir(member))
        started = supervisor.start(
            member,
            self.argv(member, binary),
            log_file=self.ws.member_log(member),
            pid_file=pid_file,
            cwd=self.ws.member_dir(member),
        )
        self.started.append(started)
        return f"pid {started.process.pid}"

    async def stop(self, member: str) -> str:
        stopped = await supervisor.stop(self.ws.member_pid(member), sleep=self.sleep, clock=self.clock)
        # a process stopped on purpose is no longer one whose exit means a failed start
        self.started = [s for s in self.started if s.name != member]
        return "stopped" if stopped else "was not running"

    def running_binary(self, member: str) -> str | None:
        pid = supervisor.running_pid(self.ws.member_pid(member))
        if pid is None:
            return None
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None

    async def restart(
        self, member: str, *, before_start: Sequence[Sequence[str]] = (), timeout: float
    ) -> None:
        binary = self.running_binary(member) or self.binary()
        await self.stop(member)
        for argv in before_start:
            await self.host.run(list(argv), timeout=timeout)
        self._start(member, binary)

    async def wipe_data(self, member: str) -> str:
        data = Path(self.ws.member_paths(member).data_dir)
        if data.exists():
            await asyncio.to_thread(shutil.rmtree, data)
            return f"removed {data}"
        return "no data"

    async def failed(self, members: Sequence[str], polls: int) -> dict[str, MemberStartError]:
        """Members this run started that have exited since (their start failed)."""
        out: dict[str, MemberStartError] = {}
        for s in self.started:
            code = s.exited() if s.name in members else None
            if code is not None:
                out[s.name] = await self.failure(
                    s.name, f"member {s.name} exited with code {code} while starting"
                )
        return out

    async def alive(self, member: str) -> None:
        if supervisor.running_pid(self.ws.member_pid(member)) is None:
            raise await self.failure(member, f"member {member} is not running")

    async def failure(self, member: str, message: str) -> MemberStartError:
        log = self.ws.member_log(member)
        return MemberStartError(
            message, member=member, log_tail=supervisor.log_tail(log), hint=f"full log: {log}"
        )

    async def stop_started(self) -> None:
        await asyncio.gather(
            *(
                supervisor.stop(self.ws.member_pid(s.name), sleep=self.sleep, clock=self.clock)
                for s in self.started
            )
        )
        self.started.clear()
