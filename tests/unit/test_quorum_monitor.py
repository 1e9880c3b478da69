"""The tests' quorum monitor counts members down at the same moment: a member that is back when asked
again at once was not down together with another (a poll is not an instant), two that stay down were."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from etcdforge.errors import EtcdError
from etcdforge.testing.workload import QuorumMonitor


class Flaky:
    """Status answers from a script: per URL, the outcomes of its successive calls (True = answers)."""

    def __init__(self, script: dict[str, list[bool]]) -> None:
        self.script = script

    async def status(self, url: str) -> str:
        outcomes = self.script[url]
        ok = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if not ok:
            raise EtcdError(f"{url} does not answer")
        return "ok"


def run(script: dict[str, list[bool]]) -> int:
    flaky = Flaky(script)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Flaky]:
        yield flaky

    async def go() -> int:
        monitor = QuorumMonitor(connect, list(script), interval=0)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await task
        return monitor.worst

    return asyncio.run(go())


def test_a_member_back_at_once_was_not_down_with_another() -> None:
    # b fails its first call only (it was starting); c is down for good from its first call
    assert run({"a": [True], "b": [False, True], "c": [False]}) == 1


def test_two_members_down_together_are_counted() -> None:
    assert run({"a": [True], "b": [False], "c": [False]}) == 2
