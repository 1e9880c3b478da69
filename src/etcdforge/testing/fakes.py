"""Fakes at etcdforge's own ports, for unit tests of the runtime, the executor and the verbs' plans.

- :class:`FakeHost` — a :class:`~etcdforge.hosts.base.Host` with files in memory; it records every argv
  (and every batch) and answers commands from canned results, so a test sees exactly what would run.
- :class:`FakeServices` — a :class:`~etcdforge.runtime.services.ServiceManager` whose members "run"
  in a set; a member can be told to fail its start (with a log tail), as a corrupt member would.
- :class:`FakeCluster` — the :class:`~etcdforge.runtime.cluster_ops.ClusterPort` of an etcd cluster in
  memory: member IDs, learners, promotion, removal, leader; a member is healthy while it runs.
- :class:`FakeClock` — time that moves only when the code sleeps (no real waiting, ever).

:func:`fake_runtime` wires them into a real :class:`~etcdforge.runtime.core.Runtime`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from etcdforge import topology
from etcdforge.errors import EtcdUnavailable, MemberStartError
from etcdforge.etcd import EtcdServerError, Health, Member
from etcdforge.etcd.types import Alarm, GetResult, HashKV, KeyValue, MemberStatus
from etcdforge.hosts.base import BatchOp, CommandOp, RunResult, WriteOp, check_result
from etcdforge.runtime.core import Runtime
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace


class FakeClock:
    """``clock()`` is the fake now; ``await clock.sleep(s)`` advances it (and records the sleep)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class FakeFile:
    data: bytes
    mode: int
    owner: str | None
    group: str | None


class FakeHost:
    """A host in memory. ``results`` maps an argv prefix to the :class:`RunResult` (or a function of the
    argv returning one) a command starting with it gets; anything else succeeds with no output."""

    def __init__(
        self,
        name: str,
        results: Mapping[tuple[str, ...], RunResult | Callable[[tuple[str, ...]], RunResult]] | None = None,
    ) -> None:
        self.name = name
        self.results = dict(results or {})
        self.files: dict[str, FakeFile] = {}
        #: every command run, in order (batched commands too)
        self.commands: list[tuple[str, ...]] = []
        #: every batch, as the ops it carried (one entry per round trip)
        self.batches: list[tuple[BatchOp, ...]] = []
        self.closed = False

    def _result(self, argv: tuple[str, ...]) -> RunResult:
        best: tuple[str, ...] | None = None
        for prefix in self.results:
            if argv[: len(prefix)] == prefix and (best is None or len(prefix) > len(best)):
                best = prefix
        if best is None:
            return RunResult(argv, 0, b"", b"")
        canned = self.results[best]
        return (
            canned(argv)
            if callable(canned)
            else RunResult(argv, canned.exit_status, canned.stdout, canned.stderr)
        )

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 60,
    ) -> RunResult:
        args = tuple(argv)
        self.commands.append(args)
        result = self._result(args)
        return check_result(self.name, result) if check else result

    async def write_file(
        self, path: str, data: bytes, *, mode: int, owner: str | None = None, group: str | None = None
    ) -> None:
        self.files[path] = FakeFile(bytes(data), mode, owner, group)

    async def make_private_dirs(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        await self.run(["mkdir", "-p", "-m", "0700", "--", *paths])

    async def read_file(self, path: str) -> bytes | None:
        f = self.files.get(path)
        return None if f is None else f.data

    async def sha256(self, paths: Sequence[str]) -> dict[str, str | None]:
        return {p: hashlib.sha256(self.files[p].data).hexdigest() if p in self.files else None for p in paths}

    async def apply_batch(self, ops: Sequence[BatchOp], *, timeout: float | None = 120) -> None:
        self.batches.append(tuple(ops))
        for op in ops:
            if isinstance(op, WriteOp):
                await self.write_file(op.path, op.data, mode=op.mode, owner=op.owner, group=op.group)
            else:
                assert isinstance(op, CommandOp)
                await self.run(op.argv)

    async def close(self) -> None:
        self.closed = True


class FakeServices:
    """Members' etcd as a set of running names. ``broken`` members fail to start (their log tail is the
    value); ``calls`` records every call as (verb, member)."""

    poll_interval = 0.1
    health_call_timeout = 1.0

    def __init__(self, running: Sequence[str] = (), broken: Mapping[str, str] | None = None) -> None:
        self.running: set[str] = set(running)
        self.broken: dict[str, str] = dict(broken or {})
        self.calls: list[tuple[str, str]] = []
        self.started: list[str] = []
        self.wiped: set[str] = set()
        #: per member, the binaries switched to (the last one runs)
        self.binaries: dict[str, list[str]] = {}

    async def start(self, members: Sequence[str]) -> str:
        for m in members:
            self.calls.append(("start", m))
            if m not in self.running:
                self.started.append(m)
                if m not in self.broken:
                    self.running.add(m)
        return f"started {', '.join(members)}"

    async def stop(self, member: str) -> str:
        self.calls.append(("stop", member))
        was = member in self.running
        self.running.discard(member)
        return "stopped" if was else "was not running"

    async def restart(
        self, member: str, *, before_start: Sequence[Sequence[str]] = (), timeout: float
    ) -> None:
        self.calls.append(("restart", member))
        self.running.discard(member)
        if member in self.broken:
            raise await self.failure(member, f"restarting etcd on {member} failed")
        self.running.add(member)

    async def switch_binary(self, member: str, binary: str | None, *, timeout: float) -> str:
        self.calls.append(("switch", member))
        self.binaries.setdefault(member, [])
        if binary is None:
            if len(self.binaries[member]) < 2:
                raise await self.failure(member, f"{member} has no previous binary")
            self.binaries[member].pop()
        elif not self.binaries[member] or self.binaries[member][-1] != binary:
            self.binaries[member].append(binary)
        self.running.discard(member)
        if member in self.broken:
            raise await self.failure(member, f"etcd on {member} did not start")
        self.running.add(member)
        return f"runs {self.binaries[member][-1] if self.binaries[member] else '?'}"

    async def wipe_data(self, member: str) -> str:
        self.calls.append(("wipe", member))
        self.wiped.add(member)
        return "removed"

    async def failed(self, members: Sequence[str], polls: int) -> dict[str, MemberStartError]:
        return {
            m: await self.failure(m, f"member {m} exited while starting")
            for m in members
            if m in self.broken and m in self.started
        }

    async def alive(self, member: str) -> None:
        if member not in self.running:
            raise await self.failure(member, f"member {member} is not running")

    async def failure(self, member: str, message: str) -> MemberStartError:
        return MemberStartError(message, member=member, log_tail=self.broken.get(member, ""), hint="fake log")

    async def stop_started(self) -> None:
        for m in self.started:
            self.running.discard(m)
        self.started.clear()


@dataclass
class FakeMember:
    id: int
    name: str
    peer_url: str
    client_url: str
    learner: bool = False


@dataclass
class FakeCluster:
    """An etcd cluster in memory. ``services`` says who runs: a member that does not run does not
    answer, a learner that does not run cannot be promoted, and a quorum of running voters is needed for
    any membership change (as etcd refuses one it cannot commit)."""

    services: FakeServices
    members: list[FakeMember] = field(default_factory=list)
    leader: int = 0
    next_id: int = 0x1000
    #: every membership call, for assertions: ("add", peer_url), ("promote", id), ("remove", id), …
    calls: list[tuple[str, object]] = field(default_factory=list)
    #: which member a peer URL belongs to once it starts (see :meth:`bind`)
    peer_names: dict[str, str] = field(default_factory=dict)
    #: the database every member streams for a snapshot (see :meth:`snapshot`)
    db: bytes = b""
    #: the keyspace (put/delete/get), its revision and compaction, and the active alarms
    kv: dict[bytes, bytes] = field(default_factory=dict)
    revision: int = 1
    compacted: int = 0
    active_alarms: list[Alarm] = field(default_factory=list)

    @classmethod
    def of(cls, spec: ClusterSpec, services: FakeServices) -> FakeCluster:
        """The cluster ``spec`` describes, every member a voter, the first one leading."""
        members = [
            FakeMember(0x100 + i, m.name, topology.peer_url(spec, m), topology.client_url(spec, m))
            for i, m in enumerate(spec.members)
        ]
        return cls(services, members, leader=members[0].id if members else 0)

    def _running(self, m: FakeMember) -> bool:
        return (m.name or self.peer_names.get(m.peer_url, "")) in self.services.running

    def _quorum(self) -> None:
        voters = [m for m in self.members if not m.learner]
        if sum(self._running(m) for m in voters) < topology.quorum(len(voters)):
            raise EtcdUnavailable("no quorum")

    def _listed(self, m: FakeMember) -> Member:
        if self._running(m) and not m.name:
            m.name = self.peer_names.get(m.peer_url, "")  # it started: etcd knows its name from now on
        return Member(m.id, m.name, (m.peer_url,), (m.client_url,) if m.name else (), m.learner)

    async def member_list(
        self, linearizable: bool = True, *, endpoint: str | None = None
    ) -> tuple[Member, ...]:
        self._quorum()
        return tuple(self._listed(m) for m in self.members)

    async def member_add(
        self, peer_urls: Sequence[str], *, learner: bool, endpoint: str | None = None
    ) -> tuple[Member, tuple[Member, ...]]:
        self._quorum()
        self.calls.append(("add", peer_urls[0]))
        self.next_id += 1
        host = peer_urls[0].split("//", 1)[1].rsplit(":", 1)[0]
        new = FakeMember(self.next_id, "", peer_urls[0], f"https://{host}:2379", learner)
        self.members.append(new)
        return self._listed(new), tuple(self._listed(m) for m in self.members)

    def bind(self, name: str, peer_url: str) -> None:
        """Member ``name`` will serve ``peer_url``: once its service runs, etcd lists it by name (etcd
        learns a new member's name when it first connects)."""
        self.peer_names[peer_url] = name

    async def member_remove(self, member_id: int, *, endpoint: str | None = None) -> tuple[Member, ...]:
        self._quorum()
        self.calls.append(("remove", member_id))
        if not any(m.id == member_id for m in self.members):
            raise EtcdServerError(
                "member not found", code="NotFound", reason="member_not_found", endpoint=None
            )
        self.members = [m for m in self.members if m.id != member_id]
        return tuple(self._listed(m) for m in self.members)

    async def member_promote(self, member_id: int, *, endpoint: str | None = None) -> tuple[Member, ...]:
        self._quorum()
        self.calls.append(("promote", member_id))
        for m in self.members:
            if m.id == member_id:
                if not self._running(m):
                    raise EtcdServerError(
                        "learner not ready",
                        code="FailedPrecondition",
                        reason="learner_not_ready",
                        endpoint=None,
                    )
                m.learner = False
        return tuple(self._listed(m) for m in self.members)

    async def move_leader(self, target_id: int) -> None:
        self.calls.append(("move-leader", target_id))
        self.leader = target_id

    def _by_url(self, endpoint: str) -> FakeMember | None:
        return next((m for m in self.members if m.client_url == endpoint), None)

    async def status(self, endpoint: str) -> MemberStatus:
        m = self._by_url(endpoint)
        if m is None or not self._running(m):
            raise EtcdUnavailable(f"{endpoint} does not answer")
        return MemberStatus(endpoint, m.id, 1, "3.5.1", 0, 0, self.leader, 1, 1, 1, m.learner, (), 1)

    async def health(self, endpoint: str) -> Health:
        m = self._by_url(endpoint)
        ok = m is not None and self._running(m)
        return Health(endpoint, ok, 0.0, None if ok else "down")

    async def snapshot(self, endpoint: str, *, timeout: float | None = None) -> AsyncIterator[bytes]:
        """The member's database as etcd streams it: ``db`` followed by its SHA-256 (``db``: bytes set
        by the test, empty by default)."""
        m = self._by_url(endpoint)
        if m is None or not self._running(m):
            raise EtcdUnavailable(f"{endpoint} does not answer")
        for i in range(0, len(self.db), 65536):
            yield self.db[i : i + 65536]
        yield hashlib.sha256(self.db).digest()

    async def hash_kv(self, endpoint: str, revision: int = 0) -> HashKV:
        """Every running member holds the same data: the hash of ``db``."""
        m = self._by_url(endpoint)
        if m is None or not self._running(m):
            raise EtcdUnavailable(f"{endpoint} does not answer")
        digest = int.from_bytes(hashlib.sha256(self.db).digest()[:4], "big")
        return HashKV(endpoint, m.id, digest, 0, revision)

    async def get(
        self,
        key: bytes,
        *,
        prefix: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        revision: int = 0,
        endpoint: str | None = None,
    ) -> GetResult:
        """The keys put (exact key or prefix); every running member answers the same."""
        m = self._by_url(endpoint) if endpoint else None
        if endpoint and (m is None or not self._running(m)):
            raise EtcdUnavailable(f"{endpoint} does not answer")
        found = tuple(
            KeyValue(k, v, 1, 1, 1)
            for k, v in sorted(self.kv.items())
            if (k.startswith(key) if prefix else k == key)
        )
        return GetResult(
            kvs=() if count_only else found, revision=revision or self.revision, count=len(found)
        )

    async def defragment(self, endpoint: str, *, timeout: float = 120.0) -> None:
        m = self._by_url(endpoint)
        if m is None or not self._running(m):
            raise EtcdUnavailable(f"{endpoint} does not answer")
        self.calls.append(("defragment", m.name))

    async def compact(self, revision: int, *, physical: bool = False, endpoint: str | None = None) -> None:
        self._quorum()
        if revision <= self.compacted:
            raise EtcdServerError(
                "mvcc: required revision has been compacted",
                code="OutOfRange",
                reason="compacted",
                endpoint=None,
            )
        self.calls.append(("compact", revision))
        self.compacted = revision

    async def alarms(self, *, endpoint: str | None = None) -> tuple[Alarm, ...]:
        return tuple(self.active_alarms)

    async def disarm(self, alarm: Alarm | None = None, *, endpoint: str | None = None) -> tuple[Alarm, ...]:
        self._quorum()
        gone = tuple(a for a in self.active_alarms if alarm is None or a == alarm)
        self.active_alarms = [a for a in self.active_alarms if a not in gone]
        self.calls += [("disarm", a.alarm) for a in gone]
        return gone

    async def put(self, key: bytes, value: bytes, *, endpoint: str | None = None) -> int:
        self._quorum()
        if self.active_alarms:
            raise EtcdServerError(
                "etcdserver: mvcc: database space exceeded", code="ResourceExhausted", reason="no_space",
                endpoint=None,
            )  # fmt: skip
        self.revision += 1
        self.kv[key] = value
        return self.revision

    async def delete(self, key: bytes, *, prefix: bool = False, endpoint: str | None = None) -> int:
        self._quorum()
        self.revision += 1
        return 1 if self.kv.pop(key, None) is not None else 0

    @asynccontextmanager
    async def connect(self, timeout: float) -> AsyncIterator[FakeCluster]:
        yield self


def fake_runtime(
    spec: ClusterSpec,
    ws: Workspace,
    *,
    hosts: Mapping[str, FakeHost] | None = None,
    services: FakeServices | None = None,
    cluster: FakeCluster | None = None,
    clock: FakeClock | None = None,
) -> tuple[Runtime, FakeServices, FakeCluster, FakeClock]:
    """A real :class:`Runtime` over fakes (created for whatever is not given)."""
    services = services or FakeServices(running=[m.name for m in spec.members])
    cluster = cluster or FakeCluster.of(spec, services)
    clock = clock or FakeClock()
    runtime = Runtime(
        spec,
        ws,
        dict(hosts) if hosts is not None else {m.name: FakeHost(m.name) for m in spec.members},
        services,
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        clock=clock,
        sleep=clock.sleep,
        cluster=cluster.connect,
    )
    return runtime, services, cluster, clock
