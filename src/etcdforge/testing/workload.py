"""The client workload of the reliability suite and its recorded history (reliability.md "Workload").

Role: while a test changes a running cluster (restarts, membership changes, certificate renewal …),
:class:`Workload` runs a few sequential clients (:class:`Client`, one request in flight each) over a
handful of keys with the mix of reliability.md — ≈ 50 % put, 20 % linearizable get, 10 % compare-and-swap
on mod_revision, 10 % delete, 10 % serializable get — and records every operation as an :class:`Op`.
:mod:`etcdforge.testing.checkers` then judges the history against what etcd itself stored.

:class:`Writer` (puts only) and :func:`check_history` (C1, C2, C5 on puts) are the original, simpler
harness; they remain for the tests that use them.

Invariants of the history:
- Values written are globally unique: ``c<client>-<seq>`` (``w<writer>-<seq>`` for :class:`Writer`,
  ``sentinel-<n>`` for the final sentinel put), so a value read back names the one op that wrote it.
- ``outcome`` is ``ok`` when etcd answered with success, ``fail`` when etcd answered with an error (the
  request was rejected and not applied), ``unknown`` when we cannot know (timeout, connection lost, no
  leader, leader changed): an unknown write may or may not have been applied.
- Choices (op kind, key) come from a ``random.Random`` seeded per client, so a run is reproducible in
  its choices (not in its timing).
- Times come from an injected monotonic clock; ``invoked <= returned``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from etcdforge.errors import EtcdError, EtcdRequestError
from etcdforge.etcd import EtcdClient, EtcdServerError

Outcome = Literal["ok", "fail", "unknown"]
OpKind = Literal["put", "get", "sget", "cas", "delete"]

#: reliability.md's mix: kind -> weight
DEFAULT_MIX: tuple[tuple[OpKind, int], ...] = (
    ("put", 50),
    ("get", 20),
    ("cas", 10),
    ("delete", 10),
    ("sget", 10),
)


@dataclass(frozen=True)
class Op:
    """One completed operation.

    ``writer`` is the client id. Per ``kind``:

    - ``put``: ``value`` written; ``revision`` = the write's revision (ok only).
    - ``cas``: ``value`` we tried to write iff the key's mod_revision was ``expected``; ``succeeded``
      says which branch ran; ``revision`` = the write's revision on success, the header revision
      otherwise; then ``value_read``/``mod_revision`` hold the key's current state.
    - ``delete``: ``deleted`` keys; ``revision`` = 0 (our client does not return the header revision of
      a DeleteRange yet).
    - ``get`` (linearizable) / ``sget`` (serializable): ``revision`` = header revision; ``value_read`` and
      ``mod_revision`` = what was read (``""`` and 0 when the key was absent).
    """

    writer: int
    key: str
    value: str
    outcome: Outcome
    revision: int
    invoked: float
    returned: float
    error: str = ""
    kind: OpKind = "put"
    mod_revision: int = 0
    value_read: str = ""
    expected: int = 0
    succeeded: bool = True
    deleted: int = 0

    @property
    def client(self) -> int:
        return self.writer

    @property
    def is_write(self) -> bool:
        """Whether this op asked etcd to change the store (whether or not it did)."""
        return self.kind in ("put", "cas", "delete")

    @property
    def may_have_written(self) -> bool:
        """Whether ``value`` may be in the store because of this op (ok and applied, or unknown)."""
        if self.kind not in ("put", "cas"):
            return False
        return self.outcome == "unknown" or (self.outcome == "ok" and self.succeeded)

    @property
    def acked_write(self) -> bool:
        """An acknowledged write that created a revision of its own (put, or a CAS that succeeded)."""
        return self.kind in ("put", "cas") and self.outcome == "ok" and self.succeeded


def classify(exc: EtcdError) -> Outcome:
    """``fail`` only when etcd itself answered no (nothing applied); everything else is indeterminate."""
    return "fail" if isinstance(exc, EtcdServerError) else "unknown"


def dump_history(history: Iterable[Op], path: Path) -> Path:
    """Write the history as JSON lines (one op per line, in order) for a failure report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for op in history:
            f.write(json.dumps(asdict(op), sort_keys=True) + "\n")
    return path


def load_history(path: Path) -> list[Op]:
    """Read back a :func:`dump_history` file."""
    with path.open(encoding="utf-8") as f:
        return [Op(**json.loads(line)) for line in f if line.strip()]


@dataclass
class Client:
    """One sequential client: one request in flight, values ``c<client_id>-<seq>``.

    ``known`` holds the last mod_revision this client saw per key; a CAS expects it (0 = absent), so
    some CASes succeed and some find the key changed — both branches are exercised.
    """

    etcd: EtcdClient
    client_id: int
    history: list[Op]
    rng: random.Random
    prefix: str = "/workload"
    keys: int = 8
    op_timeout: float = 2.0
    mix: Sequence[tuple[OpKind, int]] = DEFAULT_MIX
    clock: Callable[[], float] = time.monotonic
    known: dict[str, int] = field(default_factory=dict)
    seq: int = 0

    def choose(self) -> tuple[OpKind, str]:
        kinds = [k for k, _ in self.mix]
        weights = [w for _, w in self.mix]
        kind = self.rng.choices(kinds, weights)[0]
        return kind, f"{self.prefix}/k{self.rng.randrange(self.keys)}"

    async def step(self) -> Op:
        kind, key = self.choose()
        return await self.do(kind, key)

    async def do(self, kind: OpKind, key: str) -> Op:
        """Run one op and append it to the history."""
        value = f"c{self.client_id}-{self.seq}" if kind in ("put", "cas") else ""
        self.seq += 1
        expected = self.known.get(key, 0) if kind == "cas" else 0
        invoked = self.clock()
        revision = mod_revision = deleted = 0
        value_read = error = ""
        succeeded = True
        outcome: Outcome = "ok"
        try:
            async with asyncio.timeout(self.op_timeout + 1.0):  # the client's own deadline comes first
                if kind == "put":
                    revision = await self.etcd.put(key, value)
                    self.known[key] = revision
                elif kind == "cas":
                    res = await self.etcd.txn(key, value, mod_revision=expected)
                    revision, succeeded = res.revision, res.succeeded
                    if not succeeded and res.current is not None:
                        mod_revision = res.current.mod_revision
                        value_read = res.current.value.decode()
                    self.known[key] = revision if succeeded else mod_revision
                elif kind == "delete":
                    deleted = await self.etcd.delete(key)
                    self.known[key] = 0
                else:
                    got = await self.etcd.get(key, serializable=kind == "sget")
                    revision = got.revision
                    if got.kvs:
                        mod_revision, value_read = got.kvs[0].mod_revision, got.kvs[0].value.decode()
                    self.known[key] = mod_revision
        except EtcdError as exc:
            outcome, error = classify(exc), exc.message
            revision = mod_revision = deleted = 0
            value_read = ""
        except TimeoutError:
            outcome, error = "unknown", f"no answer within {self.op_timeout + 1.0:g}s"
            revision = mod_revision = deleted = 0
            value_read = ""
        op = Op(
            self.client_id,
            key,
            value,
            outcome,
            revision,
            invoked,
            self.clock(),
            error,
            kind=kind,
            mod_revision=mod_revision,
            value_read=value_read,
            expected=expected,
            succeeded=succeeded,
            deleted=deleted,
        )
        self.history.append(op)
        return op

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            op = await self.step()
            # after a failure, do not spin against a member that refuses instantly
            await asyncio.sleep(0.05 if op.outcome != "ok" else 0)


@dataclass
class Workload:
    """N sequential clients sharing one :class:`EtcdClient` (the client serialises nothing: each
    coroutine keeps its own request in flight). Build the etcd client with ``timeout`` 1–2 s.

    ``start_revision`` is the store revision read just before the first op; the authoritative history
    for the checkers starts there.
    """

    etcd: EtcdClient
    clients: int = 3
    prefix: str = "/workload"
    keys: int = 8
    seed: int = 0
    op_timeout: float = 2.0
    mix: Sequence[tuple[OpKind, int]] = DEFAULT_MIX
    clock: Callable[[], float] = time.monotonic
    history: list[Op] = field(default_factory=list)
    start_revision: int = 0
    started: float = 0.0

    def __post_init__(self) -> None:
        if self.keys < 1:
            raise ValueError("Workload needs at least one key")
        self.members = [
            Client(
                self.etcd,
                i,
                self.history,
                random.Random(self.seed * 1000 + i),
                prefix=self.prefix,
                keys=self.keys,
                op_timeout=self.op_timeout,
                mix=self.mix,
                clock=self.clock,
            )
            for i in range(self.clients)
        ]

    async def begin(self) -> None:
        """Record the starting revision (once)."""
        if not self.start_revision:
            self.start_revision = (await self.etcd.get(self.prefix, prefix=True, keys_only=True)).revision
            self.started = self.clock()

    async def run(self, stop: asyncio.Event) -> list[Op]:
        """Run every client until ``stop`` is set; return the history (shared, in completion order)."""
        await self.begin()
        await asyncio.gather(*(c.run(stop) for c in self.members))
        return self.history

    async def run_for(self, seconds: float) -> list[Op]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handle = loop.call_later(seconds, stop.set)
        try:
            return await self.run(stop)
        finally:
            handle.cancel()

    async def sentinel(self, *, deadline: float = 30.0, pause: float = 0.2) -> Op:
        """The closing put that must succeed: retried (new value each time) until ok or ``deadline``.

        Recorded under client id ``clients`` (one past the workers). The checkers fail the run unless the
        last sentinel op is ok.
        """
        end = self.clock() + deadline
        n = 0
        while True:
            invoked = self.clock()
            value = f"sentinel-{n}"
            key = f"{self.prefix}/sentinel"
            try:
                revision = await self.etcd.put(key, value)
                outcome: Outcome = "ok"
                error = ""
            except EtcdError as exc:
                revision, outcome, error = 0, classify(exc), exc.message
            op = Op(self.clients, key, value, outcome, revision, invoked, self.clock(), error)
            self.history.append(op)
            if outcome == "ok" or self.clock() >= end:
                return op
            n += 1
            await asyncio.sleep(pause)


def throughput(history: Sequence[Op], *, start: float, until: float) -> float:
    """Acknowledged ops per second in ``[start, until)`` (by return time)."""
    span = until - start
    if span <= 0:
        return 0.0
    return sum(1 for op in history if op.outcome == "ok" and start <= op.returned < until) / span


# -- the original writer harness ------------------------------------------------------------------------


@dataclass
class Writer:
    """One sequential writer (one request in flight) over ``keys`` keys under ``prefix``: puts only.

    The special case of :class:`Client` with an all-put mix, kept with its own value scheme
    (``w<writer>-<seq>``) for the tests that use it.
    """

    client: EtcdClient
    writer_id: int = 0
    prefix: str = "/workload"
    keys: int = 10
    clock: Callable[[], float] = time.monotonic
    history: list[Op] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, *, pause: float = 0.0) -> None:
        seq = 0
        while not stop.is_set():
            key = f"{self.prefix}/k{seq % self.keys}"
            value = f"w{self.writer_id}-{seq}"
            invoked = self.clock()
            try:
                revision = await self.client.put(key, value)
                outcome: Outcome = "ok"
                error = ""
            except EtcdRequestError as exc:
                # etcd answered with an error: the write was rejected, not applied
                revision, outcome, error = 0, "fail", exc.message
            except EtcdError as exc:
                revision, outcome, error = 0, "unknown", exc.message
            self.history.append(
                Op(self.writer_id, key, value, outcome, revision, invoked, self.clock(), error)
            )
            seq += 1
            await asyncio.sleep(pause)

    @property
    def acknowledged(self) -> int:
        return sum(1 for op in self.history if op.outcome == "ok")


@dataclass(frozen=True)
class CheckResult:
    acknowledged: int
    failed: int
    unknown: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


async def check_history(client: EtcdClient, history: Sequence[Op]) -> CheckResult:
    """The quick check for :class:`Writer` histories (no authoritative read of every revision).

    C1: every acknowledged write is in etcd at its revision with its value. C5: distinct acknowledged
    writes got distinct revisions. C2 (no phantom): the current values under the workload's keys were
    all issued by some writer. For mixed workloads use :func:`etcdforge.testing.checkers.check_all`.
    """
    problems: list[str] = []
    writes = [op for op in history if op.kind in ("put", "cas")]
    acked = [op for op in writes if op.acked_write]
    revisions: dict[int, Op] = {}
    for op in acked:
        if op.revision in revisions:
            problems.append(f"C5: {op.value} and {revisions[op.revision].value} share revision {op.revision}")
        revisions[op.revision] = op
    sem = asyncio.Semaphore(16)

    async def read_back(op: Op) -> str | None:
        async with sem:
            got = await client.get(op.key, revision=op.revision)
        found = [kv for kv in got.kvs if kv.mod_revision == op.revision]
        if not found:
            return f"C1: acknowledged write {op.key}={op.value} at revision {op.revision} is missing"
        if found[0].value.decode() != op.value:
            return (
                f"C1: {op.key} at revision {op.revision} is {found[0].value.decode()!r}, "
                f"acknowledged {op.value!r}"
            )
        return None

    problems += [p for p in await asyncio.gather(*map(read_back, acked)) if p is not None]
    issued = {op.value for op in writes}
    prefixes = {op.key.rsplit("/", 1)[0] + "/" for op in history}
    for prefix in prefixes:
        current = await client.get(prefix, prefix=True)
        for kv in current.kvs:
            if kv.value.decode() not in issued:
                problems.append(f"C2: {kv.key.decode()} holds {kv.value.decode()!r}, which no writer issued")
    return CheckResult(
        acknowledged=sum(1 for op in history if op.outcome == "ok"),
        failed=sum(1 for op in history if op.outcome == "fail"),
        unknown=sum(1 for op in history if op.outcome == "unknown"),
        problems=tuple(problems),
    )


@dataclass
class QuorumMonitor:
    """Polls every member's Status while an operation runs and records who did not answer, so a test can
    assert that a rolling operation never had more than one member down. Each poll opens fresh
    connections: a channel to a member that was down retries on a backoff of its own and would report it
    down for longer than it was."""

    connect: Callable[[], AbstractAsyncContextManager[EtcdClient]]
    urls: Sequence[str]
    interval: float = 0.1
    #: per poll, the URLs that did not answer
    samples: list[tuple[str, ...]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            down = await self._poll(self.urls)
            if down:
                # a poll is not an instant: a member that was starting when its call went out and another
                # that stopped before its answer came back were not down together. Those still down when
                # asked again at once are the ones down at the same moment.
                down = await self._poll(down)
            self.samples.append(down)
            await asyncio.sleep(self.interval)

    async def _poll(self, urls: Sequence[str]) -> tuple[str, ...]:
        async with self.connect() as client:
            answers = await asyncio.gather(*(client.status(u) for u in urls), return_exceptions=True)
        return tuple(u for u, a in zip(urls, answers, strict=True) if isinstance(a, EtcdError))

    @property
    def worst(self) -> int:
        """The most members down at once."""
        return max((len(s) for s in self.samples), default=0)
