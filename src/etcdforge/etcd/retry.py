"""Retry with capped exponential backoff, with time and sleep injected.

Role: the one backoff loop for callers that want to wait out a transient etcd condition (a member
starting, an election, a learner catching up). The client itself never retries behind your back apart
from trying the next endpoint.

Invariants: the loop reads time only through ``clock`` and waits only through ``sleep``, so unit tests
drive it with a fake clock and never sleep; it never sleeps past ``deadline`` (the last wait is
shortened) and always re-raises the last error when it gives up.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from etcdforge.errors import EtcdError, EtcdUnavailable

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay schedule: ``initial * factor**n`` capped at ``maximum``, jittered by ±``jitter`` (a fraction)."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (0-based); ``rand`` returns [0, 1)."""
        base = min(self.maximum, self.initial * self.factor**attempt)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


def retry_transient(exc: BaseException) -> bool:
    """Default predicate: retry what may pass by itself — unreachable members and no-leader answers."""
    return isinstance(exc, EtcdUnavailable)


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    should_retry: Callable[[BaseException], bool] = retry_transient,
    backoff: Backoff = Backoff(),
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await ``op()`` until it succeeds, a non-retryable error occurs, or ``timeout`` seconds pass.

    The error that ends the loop is raised unchanged, so callers see the most recent, most precise cause.
    """
    deadline = clock() + timeout
    attempt = 0
    while True:
        try:
            return await op()
        except EtcdError as exc:
            if not should_retry(exc):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise
            await sleep(min(backoff.delay(attempt, rand), remaining))
            attempt += 1
