"""The retry loop runs on an injected clock and sleep: these tests never sleep."""

from __future__ import annotations

import asyncio

import pytest

from etcdforge.errors import EtcdRequestError, EtcdUnavailable
from etcdforge.etcd.retry import Backoff, retry
from etcdforge.testing.fakes import FakeClock


class FakeTime(FakeClock):
    def __init__(self) -> None:
        super().__init__(100.0)
        self.sleeps = self.slept

    def clock(self) -> float:
        return self.now


def test_backoff_schedule_is_capped_and_jittered() -> None:
    b = Backoff(initial=0.1, factor=2, maximum=1.0, jitter=0.5)
    assert [b.delay(n, lambda: 0.5) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.delay(0, lambda: 0.0) == pytest.approx(0.05)
    assert b.delay(0, lambda: 0.999999) == pytest.approx(0.15, rel=1e-4)


def test_retries_transient_until_success() -> None:
    t = FakeTime()
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise EtcdUnavailable("down")
        return "ok"

    result = asyncio.run(retry(op, timeout=10, sleep=t.sleep, clock=t.clock, rand=lambda: 0.5))
    assert result == "ok" and calls == 4
    assert t.sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_gives_up_at_deadline_with_last_error_and_never_oversleeps() -> None:
    t = FakeTime()
    n = 0

    async def op() -> None:
        nonlocal n
        n += 1
        raise EtcdUnavailable(f"down {n}")

    with pytest.raises(EtcdUnavailable, match="down"):
        asyncio.run(retry(op, timeout=1.0, sleep=t.sleep, clock=t.clock, rand=lambda: 0.5))
    assert sum(t.sleeps) == pytest.approx(1.0)  # 0.1+0.2+0.4, then the remaining 0.3, not 0.8
    assert t.sleeps[-1] == pytest.approx(0.3)


def test_non_retryable_errors_raise_immediately() -> None:
    t = FakeTime()

    async def op() -> None:
        raise EtcdRequestError("etcdserver: member not found", code="NOT_FOUND")

    with pytest.raises(EtcdRequestError):
        asyncio.run(retry(op, timeout=10, sleep=t.sleep, clock=t.clock))
    assert t.sleeps == []


def test_custom_predicate() -> None:
    t = FakeTime()
    seen: list[str] = []

    async def op() -> None:
        seen.append("x")
        raise EtcdRequestError("busy", code="RESOURCE_EXHAUSTED")

    with pytest.raises(EtcdRequestError):
        asyncio.run(
            retry(
                op,
                timeout=0.25,
                should_retry=lambda e: "busy" in str(e),
                sleep=t.sleep,
                clock=t.clock,
                rand=lambda: 0.5,
            )
        )
    assert len(seen) == 3 and sum(t.sleeps) == pytest.approx(0.25)
