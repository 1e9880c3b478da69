"""The local-mode runtime: carries out plan actions on this machine (files, PKI, member processes).

Every action re-checks its guard before acting (a file already equal is not rewritten, a running member
is not started twice), so executing a stale plan is harmless and a re-run converges.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import topology
from etcdforge.errors import MemberStartError, WorkspaceError
from etcdforge.fsutil import atomic_write, ensure_dir, read_optional
from etcdforge.plan import (
    Action,
    AddLearner,
    InstallMemberPki,
    IssueCerts,
    MoveLeader,
    PromoteLearner,
    RemoveFile,
    RemoveMember,
    RemoveTree,
    StartMember,
    StopMember,
    VerifyPresented,
    WaitHealthy,
    WipeData,
    WriteFile,
)
from etcdforge.services import cluster_ops
from etcdforge.services import local as supervisor
from etcdforge.services.control import issue_certs, perform_control_file
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client

POLL_INTERVAL = 0.05
#: per-poll call timeout while waiting for health: short, because we poll again anyway
HEALTH_CALL_TIMEOUT = 0.5


class LocalRuntime:
    """Implements :class:`etcdforge.executor.Runtime` for a local workspace."""

    def __init__(
        self,
        spec: ClusterSpec,
        ws: Workspace,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self.ws = ws
        self.now = now
        self.clock = clock
        self.sleep = sleep
        #: processes started by this runtime, so a failed `up` can stop exactly those
        self.started: list[supervisor.Started] = []

    async def perform(self, action: Action) -> str:
        if isinstance(action, WriteFile | RemoveFile):
            return await perform_control_file(action)
        if isinstance(action, IssueCerts):
            return await self.issue_certs(action)
        if isinstance(action, InstallMemberPki):
            return await self.install_member_pki(action)
        if isinstance(action, StartMember):
            return await self.start_member(action)
        if isinstance(action, StopMember):
            return await self.stop_member(action)
        if isinstance(action, WaitHealthy):
            return await self.wait_healthy(action)
        if isinstance(action, RemoveTree):
            return await self.remove_tree(action)
        if isinstance(action, VerifyPresented):
            from etcdforge.services.cert_verify import verify_presented

            return await verify_presented(self.ws, action, sleep=self.sleep, clock=self.clock)
        if isinstance(action, WipeData):
            data = Path(self.ws.member_paths(action.member).data_dir)
            if data.exists():
                await asyncio.to_thread(shutil.rmtree, data)
                return f"removed {data}"
            return "no data"
        return await self.cluster_action(action)

    async def cluster_action(self, action: Action) -> str:
        """Membership actions: the same calls in every mode, through the admin client."""
        if not isinstance(action, AddLearner | PromoteLearner | RemoveMember | MoveLeader):
            raise TypeError(f"local mode cannot perform {type(action).__name__}")
        async with admin_client(self.spec, self.ws, timeout=10.0) as client:
            return await cluster_ops.perform(
                client, action, alive=self._alive, sleep=self.sleep, clock=self.clock
            )

    async def _alive(self, member: str) -> None:
        if supervisor.running_pid(self.ws.member_pid(member)) is None:
            raise MemberStartError(
                f"member {member} is not running",
                member=member,
                log_tail=supervisor.log_tail(self.ws.member_log(member)),
                hint=f"full log: {self.ws.member_log(member)}",
            )

    async def issue_certs(self, action: IssueCerts) -> str:
        return await issue_certs(self.spec, self.ws, action, self.now())

    async def install_member_pki(self, action: InstallMemberPki) -> str:
        changed = 0
        for src, dst, mode in action.files:
            data = read_optional(Path(src))
            if data is None:
                raise WorkspaceError(
                    f"{src} is missing from the workspace PKI", hint="run `etcdforge up` again"
                )
            target = Path(dst)
            if read_optional(target) != data:
                ensure_dir(target.parent)
                atomic_write(target, data, mode)
                changed += 1
        return f"{changed} file(s) installed"

    async def start_member(self, action: StartMember) -> str:
        pid_file = self.ws.member_pid(action.member)
        if supervisor.running_pid(pid_file) is not None:
            return "already running"
        ensure_dir(self.ws.member_dir(action.member))
        started = supervisor.start(
            action.member,
            list(action.argv),
            log_file=self.ws.member_log(action.member),
            pid_file=pid_file,
            cwd=self.ws.member_dir(action.member),
        )
        self.started.append(started)
        return f"pid {started.process.pid}"

    async def stop_member(self, action: StopMember) -> str:
        stopped = await supervisor.stop(self.ws.member_pid(action.member), sleep=self.sleep, clock=self.clock)
        # a process we stopped on purpose is no longer one whose exit means a failed start
        self.started = [s for s in self.started if s.name != action.member]
        return "stopped" if stopped else "was not running"

    async def stop_started(self) -> None:
        """Stop every process this runtime started (used when `up` fails half-way)."""
        await asyncio.gather(
            *(
                supervisor.stop(self.ws.member_pid(s.name), sleep=self.sleep, clock=self.clock)
                for s in self.started
            )
        )
        self.started.clear()

    def _failed_members(self, among: frozenset[str]) -> dict[str, MemberStartError]:
        """Members this runtime started that have exited since (their start failed)."""
        out: dict[str, MemberStartError] = {}
        for s in self.started:
            code = s.exited() if s.name in among else None
            if code is not None:
                out[s.name] = MemberStartError(
                    f"member {s.name} exited with code {code} while starting",
                    member=s.name,
                    log_tail=supervisor.log_tail(s.log_file),
                    hint=f"full log: {s.log_file}",
                )
        return out

    async def wait_healthy(self, action: WaitHealthy) -> str:
        urls = {n: topology.client_url(self.spec, self.spec.member(n)) for n in action.members}

        async def check_failed(pending: frozenset[str], polls: int) -> dict[str, MemberStartError]:
            return self._failed_members(pending)

        async def timed_out(name: str, error: str) -> MemberStartError:
            return MemberStartError(
                f"member {name} not healthy after {action.timeout:.0f}s: {error}",
                member=name,
                log_tail=supervisor.log_tail(self.ws.member_log(name)),
                hint=f"full log: {self.ws.member_log(name)}",
            )

        async with admin_client(self.spec, self.ws, timeout=HEALTH_CALL_TIMEOUT) as client:
            waited = await cluster_ops.wait_healthy(
                client,
                urls,
                action.timeout,
                need=action.need,
                poll_interval=POLL_INTERVAL,
                check_failed=check_failed,
                timed_out=timed_out,
                sleep=self.sleep,
                clock=self.clock,
            )
        return waited.note()

    async def remove_tree(self, action: RemoveTree) -> str:
        path = Path(action.path)
        marker = path / "cluster.yaml"
        if not marker.is_file():
            raise WorkspaceError(f"{path} does not look like an etcdforge workspace; not removing it")
        # everything but the spec first: an interrupted removal leaves a workspace a re-run finishes
        for entry in sorted(path.iterdir()):
            if entry == marker:
                continue
            if entry.is_dir() and not entry.is_symlink():
                await asyncio.to_thread(shutil.rmtree, entry)
            else:
                entry.unlink(missing_ok=True)
        marker.unlink()
        path.rmdir()
        return "removed"
