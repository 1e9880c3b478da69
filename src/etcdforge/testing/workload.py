"""A writer workload and the "no lost acknowledged write" check (reliability.md C1, C2, C5).

Used by tests that change a running cluster (rolling restarts, membership changes, certificate
renewal): while the tool works, ``Writer`` keeps putting globally unique values and records every
outcome; afterwards :func:`check_history` reads each acknowledged write back *at its revision* and
fails on any that is missing or different.

Invariants of the history: values are unique (``w<writer>-<seq>``), an ``ok`` op carries the revision
etcd returned, an op that failed in an indeterminate way (timeout, connection lost) is ``unknown``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from etcdforge.errors import EtcdError, EtcdRequestError
from etcdforge.etcd import EtcdClient

Outcome = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True)
class Op:
    writer: int
    key: str
    value: str
    outcome: Outcome
    revision: int
    invoked: float
    returned: float
    error: str = ""


@dataclass
class Writer:
    """One sequential writer (one request in flight) over ``keys`` keys under ``prefix``."""

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
            if pause:
                await asyncio.sleep(pause)
            else:
                await asyncio.sleep(0)

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
    """C1: every acknowledged write is in etcd at its revision with its value.
    C5: distinct acknowledged writes got distinct revisions. C2 (no phantom): the current values under
    the workload's keys were all issued by some writer."""
    problems: list[str] = []
    acked = [op for op in history if op.outcome == "ok"]
    revisions: dict[int, Op] = {}
    for op in acked:
        if op.revision in revisions:
            problems.append(f"C5: {op.value} and {revisions[op.revision].value} share revision {op.revision}")
        revisions[op.revision] = op
        got = await client.get(op.key, revision=op.revision)
        found = [kv for kv in got.kvs if kv.mod_revision == op.revision]
        if not found:
            problems.append(
                f"C1: acknowledged write {op.key}={op.value} at revision {op.revision} is missing"
            )
        elif found[0].value.decode() != op.value:
            problems.append(
                f"C1: {op.key} at revision {op.revision} is {found[0].value.decode()!r}, "
                f"acknowledged {op.value!r}"
            )
    issued = {op.value for op in history}
    prefixes = {op.key.rsplit("/", 1)[0] + "/" for op in history}
    for prefix in prefixes:
        current = await client.get(prefix, prefix=True)
        for kv in current.kvs:
            if kv.value.decode() not in issued:
                problems.append(f"C2: {kv.key.decode()} holds {kv.value.decode()!r}, which no writer issued")
    return CheckResult(
        acknowledged=len(acked),
        failed=sum(1 for op in history if op.outcome == "fail"),
        unknown=sum(1 for op in history if op.outcome == "unknown"),
        problems=tuple(problems),
    )
