"""Which backups to keep: the last N plus the newest in each hourly/daily/weekly/monthly bucket. Pure.

Rules (every one a table test):

- ``last``: the N newest verified backups are kept.
- ``hourly``/``daily``/``weekly``/``monthly``: for the N most recent periods that hold a verified backup,
  the newest verified backup of the period is kept (periods in UTC; weeks are ISO weeks).
- The newest verified backup is always kept, whatever the policy says.
- An unverified backup (failed or never checked) newer than the newest verified one is kept (it may be
  in progress elsewhere); an older unverified one is deleted — it can never be restored with confidence.
- Nothing is kept for a reason it does not have: each kept backup lists why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from etcdforge.spec import Retention


@dataclass(frozen=True)
class Candidate:
    id: str
    taken: datetime  # timezone-aware, UTC
    verified: bool


@dataclass(frozen=True)
class Decision:
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    delete: dict[str, str] = field(default_factory=dict)  # id -> reason


PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
}


def decide(backups: Sequence[Candidate], policy: Retention) -> Decision:
    """Split ``backups`` into kept (with reasons) and deleted (with the reason)."""
    newest_first = sorted(backups, key=lambda b: (b.taken, b.id), reverse=True)
    verified = [b for b in newest_first if b.verified]
    keep: dict[str, list[str]] = {}

    def mark(b: Candidate, why: str) -> None:
        keep.setdefault(b.id, []).append(why)

    if verified:
        mark(verified[0], "newest verified")
    for b in verified[: policy.last]:
        mark(b, f"last {policy.last}")
    for rule, period_of in PERIODS.items():
        count = getattr(policy, rule)
        seen: list[tuple[int, ...]] = []
        for b in verified:
            period = period_of(b.taken)
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            mark(b, f"{rule} {count}")
    newest_verified = verified[0].taken if verified else None
    delete: dict[str, str] = {}
    for b in newest_first:
        if b.id in keep:
            continue
        if not b.verified and (newest_verified is None or b.taken > newest_verified):
            keep[b.id] = ["unverified, newer than every verified backup"]
        elif not b.verified:
            delete[b.id] = "not verified"
        else:
            delete[b.id] = "outside the retention policy"
    return Decision(keep, delete)
