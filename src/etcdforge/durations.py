"""Go ``time.ParseDuration`` for cfssl ``expiry``/``backdate`` strings, and the inverse.

cfssl parses durations with Go, whose units stop at hours: ``"365d"`` is an error there, so it must
be an error here too, or a config we accept would be one cfssl rejects (cfssl-compat.md B1).
"""

from __future__ import annotations

import re
from datetime import timedelta

from etcdforge.errors import CfsslConfigError

# Nanoseconds per unit, exactly Go's table (both micro signs are accepted by Go).
_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_HINT = "use hours, e.g. 8760h (Go durations have no d or y unit)"


def parse_go_duration(text: str) -> timedelta:
    """Parse ``text`` as Go does; raise :class:`CfsslConfigError` with Go's message and a fix.

    Sub-microsecond parts are truncated (``timedelta`` has microsecond resolution).
    """
    s = text
    if s in ("0", "+0", "-0"):
        return timedelta(0)
    if not s:
        raise CfsslConfigError(f'time: invalid duration "{text}"', hint=_HINT)
    neg = s[0] == "-"
    if s[0] in "+-":
        s = s[1:]
    if not s:
        raise CfsslConfigError(f'time: invalid duration "{text}"', hint=_HINT)
    total_ns = 0
    while s:
        m = _PART.match(s)
        whole, frac, unit = (m.group(1), m.group(2), m.group(3)) if m else ("", None, "")
        if not whole and not frac:
            raise CfsslConfigError(f'time: invalid duration "{text}"', hint=_HINT)
        if not unit:
            raise CfsslConfigError(f'time: missing unit in duration "{text}"', hint=_HINT)
        if unit not in _UNITS:
            raise CfsslConfigError(f'time: unknown unit "{unit}" in duration "{text}"', hint=_HINT)
        scale = _UNITS[unit]
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // (10 ** len(frac))
        assert m is not None
        s = s[m.end() :]
    if total_ns > (1 << 63) - 1:
        raise CfsslConfigError(f'time: invalid duration "{text}"', hint="the duration overflows Go's int64")
    td = timedelta(microseconds=total_ns // 1000)
    return -td if neg else td


def format_go_duration(td: timedelta) -> str:
    """Render ``td`` so that Go parses it back to the same value; whole hours print as ``"8760h"``.

    cfssl users read ca-config.json files, and hours are the unit they write by hand.
    """
    us = td // timedelta(microseconds=1)
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us == 0:
        return "0s"
    hours, rest = divmod(us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds or micros:
        out += f"{seconds}.{micros:06d}s".replace(".000000s", "s")
    return out
