"""Lines of a member's log (etcd's zap JSON, one object per line; plain text lines are kept as they are)
and the events doctor looks for in them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LogLine:
    #: seconds since the epoch (None: the line has no time doctor can read)
    ts: float | None
    msg: str
    text: str


#: what doctor counts, by rule: etcd's own wording (3.4–3.6)
SLOW_DISK = ("slow fdatasync",)
HEARTBEAT = ("failed to send out heartbeat on time",)
_ELECTED = re.compile(r"elected leader (?:[0-9a-f]+ )?at term (\d+)")


def _ts(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def parse_line(text: str) -> LogLine:
    text = text.rstrip("\n")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return LogLine(_ts(obj.get("ts")), str(obj.get("msg", "")), text)
    return LogLine(None, text, text)


def parse(text: str) -> tuple[LogLine, ...]:
    return tuple(parse_line(line) for line in text.split("\n") if line.strip())


def since(lines: Iterable[LogLine], start: float) -> tuple[LogLine, ...]:
    """Lines at or after ``start`` (a line without a time cannot be placed and is left out)."""
    return tuple(line for line in lines if line.ts is not None and line.ts >= start)


def matching(lines: Iterable[LogLine], needles: Iterable[str]) -> tuple[LogLine, ...]:
    wanted = tuple(needles)
    return tuple(line for line in lines if any(n in line.msg or n in line.text for n in wanted))


def elected_terms(lines: Iterable[LogLine]) -> set[int]:
    """The raft terms in which this member saw a leader elected (``… elected leader X at term N``)."""
    out = set()
    for line in lines:
        found = _ELECTED.search(line.msg) or _ELECTED.search(line.text)
        if found:
            out.add(int(found.group(1)))
    return out
