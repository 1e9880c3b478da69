"""The one runtime: carries out every plan action, in both modes, through the host and service ports.

Every action re-checks its guard before acting (a file already identical is not rewritten, an upload
whose sha256 matches is skipped, a running member is not started twice), so executing a stale plan is
harmless and a re-run after an interruption converges. Control-machine actions (the spec, records,
the PKI) and cluster actions (membership calls through the admin client) are the same in every mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import cast

from etcdforge import topology
from etcdforge.errors import BinaryError, MemberStartError, WorkspaceError
from etcdforge.fsutil import read_optional
from etcdforge.hosts.base import BatchOp, CommandOp, Host, WriteOp
from etcdforge.hosts.errors import HostError
from etcdforge.observe.auth import AuthPort
from etcdforge.plan import (
    Action,
    AddLearner,
    CheckMember,
    CheckRestored,
    CheckSnapshot,
    Compact,
    Defragment,
    DeleteBackup,
    DisarmAlarms,
    FetchBackup,
    FetchRelease,
    HostCommand,
    InstallMemberPki,
    IssueCerts,
    LocalCommand,
    MoveLeader,
    MovePath,
    PackBackup,
    PackPki,
    ProbeWrite,
    PromoteLearner,
    PutFile,
    RemoveFile,
    RemoveMember,
    RemoveTree,
    RestartMember,
    RestoreData,
    StartMembers,
    StopMember,
    StoreBackup,
    SwitchBinary,
    TakeSnapshot,
    UploadFile,
    VerifyPresented,
    WaitClusterVersion,
    WaitHealthy,
    WaitPeerServing,
    WipeData,
    WriteFile,
    WriteManifest,
)

# (backup, release, upgrade and maintenance operations load with their first action: not on `up`'s path)
from etcdforge.runtime import access_ops, cluster_ops
from etcdforge.runtime.cluster_ops import ClusterPort
from etcdforge.runtime.control import issue_certs, move_path, perform_control_file, remove_tree
from etcdforge.runtime.services import ServiceManager
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client

#: the actions :mod:`etcdforge.runtime.backup_ops` carries out
BACKUP_ACTIONS = (
    TakeSnapshot,
    CheckSnapshot,
    PackBackup,
    PackPki,
    WriteManifest,
    StoreBackup,
    DeleteBackup,
    FetchBackup,
    RestoreData,
    CheckRestored,
)
#: etcdutl exists only from 3.5 on; a 3.4 source simply has none
OPTIONAL_TOOLS = ("etcdutl",)


class Runtime:
    """Implements :class:`etcdforge.executor.BatchRuntime` for a workspace, whatever its mode.

    ``hosts`` maps member names to their host (local mode: this machine for every member);
    ``services`` starts, stops and watches their etcd; ``cluster`` connects to etcd (default: the
    workspace's admin client). Clock, sleep and time are injected (unit tests run with fakes of all).
    """

    def __init__(
        self,
        spec: ClusterSpec,
        ws: Workspace,
        hosts: Mapping[str, Host],
        services: ServiceManager,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cluster: Callable[[float], AbstractAsyncContextManager[ClusterPort]] | None = None,
    ) -> None:
        self.spec = spec
        self.ws = ws
        self.hosts = hosts
        self.services = services
        self.now = now
        self.clock = clock
        self.sleep = sleep
        #: a connection to etcd with the admin certificate, given a per-call timeout
        self.cluster = cluster or (lambda timeout: admin_client(spec, ws, timeout=timeout))

    def host(self, member: str) -> Host:
        try:
            return self.hosts[member]
        except KeyError:
            # a planner bug or a partial connection: one clear line, never a KeyError
            raise HostError(f"not connected to {member}'s host in this run", host=member) from None

    async def perform(self, action: Action) -> str:
        if isinstance(action, WriteFile | RemoveFile):  # control-machine files (the spec, records)
            return await perform_control_file(action)
        if isinstance(action, IssueCerts):
            return await issue_certs(self.spec, self.ws, action, self.now())
        if isinstance(action, PutFile):
            await self.host(action.host).write_file(
                action.path, self.content(action), mode=action.mode, owner=action.owner, group=action.group
            )
            return "written"
        if isinstance(action, InstallMemberPki):
            return await self.install_member_pki(action)
        if isinstance(action, UploadFile):
            return await self.upload(action)
        if isinstance(action, HostCommand):
            await self.host(action.host).run(list(action.argv), timeout=120)
            return "done"
        if isinstance(action, FetchRelease):
            from etcdforge.runtime import releases

            path = await asyncio.to_thread(
                releases.fetch, action.url, action.sha256, Path(action.cache_dir), action.version
            )
            return f"verified and unpacked in {path}"
        if isinstance(action, StartMembers):
            return await self.services.start(action.members)
        if isinstance(action, StopMember):
            return await self.services.stop(action.member)
        if isinstance(action, RestartMember):
            return await self.restart(action)
        if isinstance(action, WipeData):
            return await self.services.wipe_data(action.member)
        if isinstance(action, WaitHealthy):
            return await self.wait_healthy(
                action.members, action.timeout, need=action.need, despite_alarms=action.despite_alarms
            )
        if isinstance(action, AddLearner | PromoteLearner | RemoveMember | MoveLeader):
            async with self.cluster(10.0) as client:
                return await cluster_ops.perform(
                    client, action, alive=self.services.alive, sleep=self.sleep, clock=self.clock
                )
        if isinstance(action, SwitchBinary):
            note = await self.services.switch_binary(action.member, action.binary, timeout=action.timeout)
            members = tuple(m.name for m in self.spec.members)
            waited = await self.wait_healthy(members, action.timeout, watch=(action.member,))
            return f"{note}; {waited}"
        if isinstance(action, CheckMember | WaitClusterVersion):
            from etcdforge.runtime import upgrade_ops

            if isinstance(action, WaitClusterVersion):
                return await upgrade_ops.wait_cluster_version(
                    self.ws, action, sleep=self.sleep, clock=self.clock
                )
            async with self.cluster(10.0) as client:
                return await upgrade_ops.check_member(client, action)
        if isinstance(action, Defragment | Compact | DisarmAlarms | ProbeWrite):
            from etcdforge.runtime import maintenance_ops

            # a defragmentation blocks its member for as long as it takes: the call's own deadline
            timeout = action.timeout + 5 if isinstance(action, Defragment) else 30.0
            async with self.cluster(timeout) as client:
                return await maintenance_ops.perform(client, action)
        if isinstance(action, access_ops.ACCESS_ACTIONS):
            async with self.cluster(10.0) as client:
                return await access_ops.perform(cast(AuthPort, client), action)
        if isinstance(action, WaitPeerServing):
            from etcdforge.runtime.cert_verify import wait_peer_serving

            return await wait_peer_serving(
                self.ws,
                action,
                running=partial(self._running, action.member),
                sleep=self.sleep,
                clock=self.clock,
            )
        if isinstance(action, VerifyPresented):
            from etcdforge.runtime.cert_verify import verify_presented

            return await verify_presented(self.ws, action, sleep=self.sleep, clock=self.clock)
        if isinstance(action, RemoveTree):
            return await remove_tree(Path(action.path), action.marker)
        if isinstance(action, MovePath):
            return await move_path(Path(action.src), Path(action.dst))
        if isinstance(action, LocalCommand):
            from etcdforge.hosts.local import LocalHost

            await LocalHost().run(list(action.argv), timeout=120)
            return "done"
        if isinstance(action, BACKUP_ACTIONS):
            from etcdforge.runtime import backup_ops

            return await backup_ops.perform(self, action)
        raise TypeError(f"no runtime action for {type(action).__name__}")

    async def perform_batch(self, actions: Sequence[Action]) -> list[str]:
        """A group of steps: file writes and commands go to each host as ONE batch (one SSH session per
        host — a session costs a login on the host), other actions run concurrently."""
        per_host: dict[str, list[BatchOp]] = {}
        others: list[Action] = []
        for action in actions:
            if isinstance(action, PutFile):
                op: BatchOp = WriteOp(
                    action.path, self.content(action), action.mode, action.owner, action.group
                )
                per_host.setdefault(action.host, []).append(op)
            elif isinstance(action, HostCommand):
                per_host.setdefault(action.host, []).append(CommandOp(action.argv))
            else:
                others.append(action)
        results = await asyncio.gather(
            *(self.host(h).apply_batch(ops) for h, ops in per_host.items()),
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

    def content(self, action: PutFile) -> bytes:
        """A file's bytes: planned, or (deferred) the workspace file as it is now."""
        if action.source is None:
            return action.content
        data = read_optional(Path(action.source))
        if data is None:
            raise WorkspaceError(
                f"{action.source} is missing from the workspace", hint="run the command again"
            )
        return data

    async def install_member_pki(self, action: InstallMemberPki) -> str:
        """Copy workspace PKI files to the member (read when the step runs: an earlier step of the same
        plan may have issued them); a destination already identical is left alone."""
        host = self.host(action.member)
        # a member's PKI directory is its own: created 0700 when missing (an existing one is left as is)
        parents = sorted({str(Path(dst).parent) for _, dst, _ in action.files})
        await host.make_private_dirs(parents)
        changed = 0
        for src, dst, mode in action.files:
            data = read_optional(Path(src))
            if data is None:
                raise WorkspaceError(f"{src} is missing from the workspace PKI", hint="run the command again")
            if await host.read_file(dst) != data:
                await host.write_file(dst, data, mode=mode)
                changed += 1
        return f"{changed} file(s) installed"

    async def upload(self, action: UploadFile) -> str:
        source = Path(action.source)
        if not source.is_file():
            if source.name in OPTIONAL_TOOLS:
                return f"skipped ({source.name} is not part of this etcd release)"
            raise BinaryError(f"{source} does not exist")
        data = await asyncio.to_thread(source.read_bytes)
        digest = hashlib.sha256(data).hexdigest()
        want = action.sha256
        from etcdforge.runtime import releases

        if want is None and (source.parent / releases.MANIFEST).is_file():
            # fetched by an earlier step of this plan: the manifest of its verified download vouches
            want = releases.manifest(source.parent).get(source.name)
        if want is None:
            raise BinaryError(f"{source} has no known sha256; not uploading it", hint="run apply again")
        if digest != want:
            raise BinaryError(f"{source} changed since it was verified (sha256 {digest[:12]}…)")
        host = self.host(action.host)
        if (await host.sha256([action.path])).get(action.path) == digest:
            return "already there"
        await host.write_file(action.path, data, mode=action.mode, owner="root", group="root")
        return f"{len(data) // 1024} KiB uploaded"

    async def _running(self, member: str) -> bool:
        try:
            await self.services.alive(member)
        except MemberStartError:
            return False
        except HostError:
            return True  # cannot tell from here: the wait's own deadline bounds it
        return True

    async def restart(self, action: RestartMember) -> str:
        """Restart one member, then gate on the health of the whole cluster before the next step."""
        await self.services.restart(action.member, before_start=action.before_start, timeout=action.timeout)
        members = tuple(m.name for m in self.spec.members)
        note = await self.wait_healthy(members, action.timeout, watch=(action.member,))
        return f"restarted; {note}"

    async def wait_healthy(
        self,
        members: tuple[str, ...],
        timeout: float,
        *,
        need: int | None = None,
        watch: Sequence[str] | None = None,
        despite_alarms: bool = False,
    ) -> str:
        """Poll until the members (all, or ``need`` of them) are healthy; a member whose etcd failed
        (among ``watch``, default all) is reported with its log tail."""
        urls = {m: topology.client_url(self.spec, self.spec.member(m)) for m in members}
        watched = frozenset(members if watch is None else watch)

        async def check_failed(pending: frozenset[str], polls: int) -> dict[str, MemberStartError]:
            return await self.services.failed(sorted(pending & watched), polls)

        async def timed_out(name: str, error: str) -> MemberStartError:
            message = f"member {name} not healthy after {timeout:.0f}s: {error}"
            return await self.services.failure(name, message)

        async with self.cluster(self.services.health_call_timeout) as client:
            waited = await cluster_ops.wait_healthy(
                client,
                urls,
                timeout,
                need=need,
                despite_alarms=despite_alarms,
                poll_interval=self.services.poll_interval,
                check_failed=check_failed,
                timed_out=timed_out,
                sleep=self.sleep,
                clock=self.clock,
            )
        return waited.note()
