"""The hosts-mode runtime: carries out plan actions on real hosts over the host port, under systemd.

Guards are re-checked at run time (a file already identical is not rewritten, an upload whose sha256
already matches is skipped), so a stale plan or a re-run after an interruption converges.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import layout, topology
from etcdforge.errors import BinaryError, MemberStartError
from etcdforge.etcd import EtcdClient
from etcdforge.hosts.base import BatchOp, CommandOp, Host, WriteOp
from etcdforge.hosts.errors import HostCommandError
from etcdforge.hosts.systemd import parse_systemctl_show
from etcdforge.plan import (
    Action,
    AddLearner,
    FetchRelease,
    HostCommand,
    IssueCerts,
    MoveLeader,
    PromoteLearner,
    PutFile,
    RemoveFile,
    RemoveMember,
    RestartMember,
    StartUnits,
    UploadFile,
    VerifyPresented,
    WaitHealthy,
    WipeData,
    WriteFile,
)
from etcdforge.services import cluster_ops, releases
from etcdforge.services.control import issue_certs, perform_control_file
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client

POLL_INTERVAL = 0.1
HEALTH_CALL_TIMEOUT = 1.0
JOURNAL_LINES = 30
#: etcdutl exists only from 3.5 on; a 3.4 source simply has none
OPTIONAL_TOOLS = ("etcdutl",)


class RemoteRuntime:
    """Implements :class:`etcdforge.executor.Runtime` for members on hosts reached through ``hosts``."""

    def __init__(
        self,
        spec: ClusterSpec,
        ws: Workspace,
        hosts: Mapping[str, Host],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self.ws = ws
        self.hosts = hosts
        self.now = now
        self.clock = clock
        self.sleep = sleep

    async def perform(self, action: Action) -> str:
        if isinstance(action, PutFile):
            return await self.put_file(action)
        if isinstance(action, UploadFile):
            return await self.upload(action)
        if isinstance(action, HostCommand):
            await self.hosts[action.host].run(list(action.argv), timeout=120)
            return "done"
        if isinstance(action, FetchRelease):
            path = await asyncio.to_thread(releases.fetch, action.url, action.sha256, Path(action.cache_dir))
            return f"verified and unpacked in {path}"
        if isinstance(action, StartUnits):
            return await self.start_units(action)
        if isinstance(action, WaitHealthy):
            return await self.wait_healthy(
                action.members, action.timeout, started=action.members, need=action.need
            )
        if isinstance(action, RestartMember):
            return await self.restart(action)
        if isinstance(action, WipeData):
            data = layout.data_dir(self.spec).rstrip("/")
            await self.hosts[action.member].run(["rm", "-rf", "--one-file-system", "--", f"{data}/member"])
            return f"removed {data}/member"
        if isinstance(action, WriteFile | RemoveFile):  # control-machine files (the spec, records)
            return await perform_control_file(action)
        if isinstance(action, AddLearner | PromoteLearner | RemoveMember | MoveLeader):
            return await self.cluster_action(action)
        if isinstance(action, IssueCerts):
            return await issue_certs(self.spec, self.ws, action, self.now())
        if isinstance(action, VerifyPresented):
            from etcdforge.services.cert_verify import verify_presented

            return await verify_presented(self.ws, action, sleep=self.sleep, clock=self.clock)
        raise TypeError(f"hosts mode cannot perform {type(action).__name__}")

    async def perform_batch(self, actions: Sequence[Action]) -> list[str]:
        """A group of steps: file writes and commands go to each host as ONE batch (one SSH session per
        host — a session costs a login on the host), other actions run concurrently."""
        per_host: dict[str, list[BatchOp]] = {}
        others: list[Action] = []
        for action in actions:
            if isinstance(action, PutFile):
                op: BatchOp = WriteOp(action.path, action.content, action.mode, action.owner, action.group)
                per_host.setdefault(action.host, []).append(op)
            elif isinstance(action, HostCommand):
                per_host.setdefault(action.host, []).append(CommandOp(action.argv))
            else:
                others.append(action)
        results = await asyncio.gather(
            *(self.hosts[h].apply_batch(ops) for h, ops in per_host.items()),
            *(self.perform(a) for a in others),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        other_notes = iter(results[len(per_host) :])
        return [
            "written"
            if isinstance(a, PutFile)
            else "done"
            if isinstance(a, HostCommand)
            else str(next(other_notes))
            for a in actions
        ]

    async def put_file(self, action: PutFile) -> str:
        # The planner only plans a write when content, mode or owner differ; rewriting atomically fixes
        # any of them, and is harmless if another run already did.
        host = self.hosts[action.host]
        await host.write_file(
            action.path, action.content, mode=action.mode, owner=action.owner, group=action.group
        )
        return "written"

    async def upload(self, action: UploadFile) -> str:
        source = Path(action.source)
        if not source.is_file():
            if source.name in OPTIONAL_TOOLS:
                return f"skipped ({source.name} is not part of this etcd release)"
            raise BinaryError(f"{source} does not exist")
        data = await asyncio.to_thread(source.read_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if action.sha256 is not None and digest != action.sha256:
            raise BinaryError(f"{source} changed since planning (sha256 {digest[:12]}…)")
        host = self.hosts[action.host]
        if (await host.sha256([action.path])).get(action.path) == digest:
            return "already there"
        await host.write_file(action.path, data, mode=action.mode, owner="root", group="root")
        return f"{len(data) // 1024} KiB uploaded"

    async def start_units(self, action: StartUnits) -> str:
        # --no-block: a new member reports READY only once a quorum runs, so members start together.
        # (start also clears a failed state; one session per host.)
        await asyncio.gather(
            *(
                self.hosts[m].run(["systemctl", "start", "--no-block", layout.UNIT_NAME])
                for m in action.members
            )
        )
        return f"started {', '.join(action.members)}"

    def _client(self, timeout: float = HEALTH_CALL_TIMEOUT) -> EtcdClient:
        return admin_client(self.spec, self.ws, timeout=timeout)

    async def _journal(self, member: str) -> str:
        if member not in self.hosts:
            return ""  # a host this run did not connect to (a partial operation)
        result = await self.hosts[member].run(
            ["journalctl", "-u", layout.UNIT_NAME, "-n", str(JOURNAL_LINES), "--no-pager", "-o", "cat"],
            check=False,
        )
        return result.stdout.decode(errors="replace").strip()

    async def _failed_units(self, members: Sequence[str]) -> tuple[str, ...]:
        """Members whose unit failed or keeps restarting (only hosts this run is connected to)."""

        async def state(member: str) -> tuple[str, dict[str, str]]:
            result = await self.hosts[member].run(
                [
                    "systemctl",
                    "show",
                    layout.UNIT_NAME,
                    "-p",
                    "ActiveState",
                    "-p",
                    "SubState",
                    "-p",
                    "NRestarts",
                ],
                check=False,
            )
            return member, parse_systemctl_show(result.stdout.decode(errors="replace"))

        out = []
        for member, unit in await asyncio.gather(*(state(m) for m in members if m in self.hosts)):
            # Restart=on-failure keeps a crashing etcd in "activating (auto-restart)", never "failed"
            restarts = unit.get("NRestarts", "0")
            if (
                unit.get("ActiveState") == "failed"
                or unit.get("SubState") == "auto-restart"
                or (restarts.isdigit() and int(restarts) > 0)
            ):
                out.append(member)
        return tuple(out)

    async def wait_healthy(
        self,
        members: tuple[str, ...],
        timeout: float,
        *,
        started: tuple[str, ...] = (),
        need: int | None = None,
    ) -> str:
        """Poll until the members (all, or ``need`` of them) are healthy; a unit that failed is reported
        with its journal tail."""
        urls = {m: topology.client_url(self.spec, self.spec.member(m)) for m in members}

        async def check_failed(pending: frozenset[str], polls: int) -> dict[str, MemberStartError]:
            # a unit check costs a session per host: every 5th poll is soon enough
            if not started or polls == 0 or polls % 5:
                return {}
            failed = await self._failed_units([m for m in started if m in pending])
            return {
                m: MemberStartError(
                    f"etcd on {m} failed to start (systemd unit failed)",
                    member=m,
                    log_tail=await self._journal(m),
                    hint=f"journalctl -u {layout.UNIT_NAME} on {m}",
                )
                for m in failed
            }

        async def timed_out(name: str, error: str) -> MemberStartError:
            return MemberStartError(
                f"{name} not healthy after {timeout:.0f}s: {error}",
                member=name,
                log_tail=await self._journal(name),
                hint=f"journalctl -u {layout.UNIT_NAME} on {name}",
            )

        async with self._client() as client:
            waited = await cluster_ops.wait_healthy(
                client,
                urls,
                timeout,
                need=need,
                poll_interval=POLL_INTERVAL,
                check_failed=check_failed,
                timed_out=timed_out,
                sleep=self.sleep,
                clock=self.clock,
            )
        return waited.note()

    async def restart(self, action: RestartMember) -> str:
        """Restart one member, then gate on the health of the whole cluster before the next step."""
        host = self.hosts[action.member]
        # Blocking restart of a Type=notify unit returns once the member is ready again (quorum holds).
        if action.before_start:
            # stop, the commands, start: one batch (one session), stopping at the first failure
            ops = [
                CommandOp(("systemctl", "stop", layout.UNIT_NAME)),
                *(CommandOp(argv) for argv in action.before_start),
                CommandOp(("systemctl", "start", layout.UNIT_NAME)),
            ]
            try:
                await host.apply_batch(ops, timeout=action.timeout)
                ok = True
            except HostCommandError:
                ok = False
        else:
            result = await host.run(
                ["systemctl", "restart", layout.UNIT_NAME], check=False, timeout=action.timeout
            )
            ok = result.ok
        if not ok:
            raise MemberStartError(
                f"restarting etcd on {action.member} failed",
                member=action.member,
                log_tail=await self._journal(action.member),
                hint=f"journalctl -u {layout.UNIT_NAME} on {action.member}",
            )
        note = await self.wait_healthy(tuple(m.name for m in self.spec.members), action.timeout)
        return f"restarted; {note}"

    async def cluster_action(self, action: AddLearner | PromoteLearner | RemoveMember | MoveLeader) -> str:
        async with self._client(timeout=10.0) as client:
            return await cluster_ops.perform(
                client, action, alive=self._alive, sleep=self.sleep, clock=self.clock
            )

    async def _alive(self, member: str) -> None:
        if await self._failed_units((member,)):
            raise MemberStartError(
                f"etcd on {member} keeps failing",
                member=member,
                log_tail=await self._journal(member),
                hint=f"journalctl -u {layout.UNIT_NAME} on {member}",
            )
