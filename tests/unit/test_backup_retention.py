"""Retention as table tests (pure): what `backup prune` keeps and deletes, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from etcdforge.backup.retention import Candidate, decide
from etcdforge.spec import Retention

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def hourly_series(n: int, *, step: timedelta = timedelta(hours=1), verified: bool = True) -> list[Candidate]:
    """n backups, newest first at T0, one per ``step``."""
    return [Candidate(f"b{i:03d}", T0 - i * step, verified) for i in range(n)]


OFF = Retention(last=0, hourly=0, daily=0, weekly=0, monthly=0)


@pytest.mark.parametrize(
    ("backups", "policy", "kept"),
    [
        # nothing at all: nothing to do
        ([], Retention(), set()),
        # last N only
        (hourly_series(8), OFF.model_copy(update={"last": 3}), {"b000", "b001", "b002"}),
        # every rule off: the newest verified backup is still kept
        (hourly_series(4), OFF, {"b000"}),
        # hourly 5 over 10 hourly backups: the 5 newest hours
        (hourly_series(10), OFF.model_copy(update={"hourly": 5}), {f"b{i:03d}" for i in range(5)}),
        # two backups in the same hour count once, the newer kept
        (
            [
                Candidate("a", T0 + timedelta(minutes=30), True),
                Candidate("b", T0 + timedelta(minutes=10), True),
            ],
            OFF.model_copy(update={"hourly": 2}),
            {"a"},
        ),
        # daily 3 over 4 days of 6-hourly backups: the newest of each of the 3 newest days
        (
            hourly_series(16, step=timedelta(hours=6)),
            OFF.model_copy(update={"daily": 3}),
            {"b000", "b003", "b007"},  # 12-02 12:00, 12-01 18:00, 11-30 18:00
        ),
        # weekly and monthly buckets
        (
            hourly_series(70, step=timedelta(days=1)),
            OFF.model_copy(update={"weekly": 2, "monthly": 3}),
            # 2026-12-02 is a Wednesday: week 49 starts Monday 11-30 (b000), week 48 ends Sunday 11-29
            # (b003); months: December (b000), November (b002 = 11-30), October (b032 = 10-31)
            {"b000", "b003", "b002", "b032"},
        ),
    ],
)
def test_what_is_kept(backups: list[Candidate], policy: Retention, kept: set[str]) -> None:
    decision = decide(backups, policy)
    assert set(decision.keep) == kept
    assert set(decision.delete) == {b.id for b in backups} - kept
    assert not set(decision.keep) & set(decision.delete)


def test_unverified_backups_are_never_kept_by_the_policy() -> None:
    backups = [
        Candidate("new-broken", T0, False),
        Candidate("good", T0 - timedelta(hours=1), True),
        Candidate("old-broken", T0 - timedelta(hours=2), False),
        Candidate("older-good", T0 - timedelta(hours=3), True),
    ]
    decision = decide(backups, OFF.model_copy(update={"last": 5}))
    # an unverified backup newer than every verified one may still be in progress: kept
    assert decision.keep["new-broken"] == ["unverified, newer than every verified backup"]
    assert decision.delete == {"old-broken": "not verified"}
    assert set(decision.keep) == {"new-broken", "good", "older-good"}


def test_the_newest_verified_backup_survives_any_policy() -> None:
    backups = [Candidate("broken", T0, False), Candidate("only-good", T0 - timedelta(days=400), True)]
    decision = decide(backups, OFF)
    assert "only-good" in decision.keep and "newest verified" in decision.keep["only-good"]


def test_reasons_name_every_rule_that_keeps_a_backup() -> None:
    decision = decide(hourly_series(1), Retention(last=1, hourly=1, daily=1, weekly=1, monthly=1))
    assert decision.keep["b000"] == [
        "newest verified",
        "last 1",
        "hourly 1",
        "daily 1",
        "weekly 1",
        "monthly 1",
    ]


def test_a_large_history_prunes_to_the_policy_size() -> None:
    # a year of hourly backups with the default policy keeps at most 5 + 24 + 7 + 4 + 6 backups
    decision = decide(hourly_series(24 * 365), Retention())
    assert len(decision.keep) <= 5 + 24 + 7 + 4 + 6
    assert len(decision.keep) + len(decision.delete) == 24 * 365
