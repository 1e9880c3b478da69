"""How far a long step got: actions report, the executor routes it to the reporter of the step running.

A context variable, set by the executor around each step, so an action deep in the runtime (a snapshot
stream, a download) needs no reporter passed down; outside a step, reporting does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_SINK: ContextVar[Callable[[str], None] | None] = ContextVar("etcdforge_progress", default=None)


def report(text: str) -> None:
    """Tell whoever watches the running step how far it got (e.g. ``512 of 1100 MiB, 180 MB/s``)."""
    sink = _SINK.get()
    if sink is not None:
        sink(text)


@contextmanager
def reporting_to(sink: Callable[[str], None] | None) -> Iterator[None]:
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def transfer(done: int, total: int, seconds: float) -> str:
    """``done`` of ``total`` bytes in ``seconds``, as a progress line."""
    rate = f", {done / seconds / 1e6:.0f} MB/s" if seconds > 0.5 else ""
    of = f" of {total / 1048576:.0f} MiB ({100 * done / total:.0f}%)" if total else " MiB"
    return f"{done / 1048576:.0f}{of}{rate}"
