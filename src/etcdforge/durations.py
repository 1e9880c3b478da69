"""Go-style durations (``87600h``, ``30m``, ``1h30m``, ``1.5s``), as cfssl and etcd accept them.

Go's ``time.ParseDuration`` knows only ``ns us µs ms s m h`` — no days, no years — so ``365d`` is an
error here too (cfssl says ``time: unknown unit "d"``), with the fix in the message.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-zµμ]+)")


def parse_go_duration_ns(text: str) -> int:
    """Nanoseconds in ``text``; raise ValueError with cfssl's wording and the fix."""
    s = text.strip()
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0
    pos = 0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        number, unit = match.groups()
        if unit not in _UNITS_NS:
            hint = " (Go durations have no days: use hours, e.g. 8760h for 365 days)" if unit in "dwy" else ""
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"{hint}')
        whole, _, frac = number.partition(".")
        value = int(whole or "0") * _UNITS_NS[unit]
        if frac:
            value += int(frac) * _UNITS_NS[unit] // 10 ** len(frac)
        total += value
        pos = match.end()
    if pos != len(s):
        raise ValueError(f'time: missing unit in duration "{text}" (e.g. 8760h, 30m)')
    return sign * total


def parse_go_duration(text: str) -> timedelta:
    return timedelta(microseconds=parse_go_duration_ns(text) / 1000)


def format_go_duration(delta: timedelta) -> str:
    """Whole hours as ``Nh`` (cfssl's idiom), else seconds."""
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"
