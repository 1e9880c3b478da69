"""The `backup now` and `backup prune` planners (pure): which member is read, which steps run, in which
order, and what prune deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etcdforge.errors import PlanError
from etcdforge.plan import DeleteBackup, RemoveTree, StoreBackup, TakeSnapshot
from etcdforge.spec import Retention
from etcdforge.verbs.backup.plan import (
    CATCH_UP_ENTRIES,
    BackupRequest,
    Candidate,
    Listed,
    choose_source,
    plan_backup,
    plan_prune,
)


def cand(
    name: str, *, leader: bool = False, learner: bool = False, healthy: bool = True, applied: int = 100
) -> Candidate:
    return Candidate(
        name,
        f"https://{name}:2379",
        hash(name) & 0xFFFF,
        learner,
        healthy,
        leader,
        applied,
        7,
        "3.5.1",
        1 << 20,
    )


def test_a_caught_up_follower_is_read_not_the_leader_nor_a_learner() -> None:
    members = [
        cand("e1", leader=True, applied=1000),
        cand("e2", applied=990),
        cand("e3", applied=995),
        cand("e4", learner=True, applied=1000),
    ]
    assert choose_source(members).name == "e3"  # the follower with the highest applied index


def test_the_leader_is_read_when_every_follower_lags_or_is_down() -> None:
    lagging = [cand("e1", leader=True, applied=CATCH_UP_ENTRIES * 3), cand("e2", applied=10)]
    assert choose_source(lagging).name == "e1"
    down = [cand("e1", leader=True), cand("e2", healthy=False), cand("e3", healthy=False)]
    assert choose_source(down).name == "e1"


@pytest.mark.parametrize(
    ("members", "wanted", "error"),
    [
        ([cand("e1", healthy=False), cand("e2", healthy=False)], None, "no healthy voting member"),
        ([cand("e1"), cand("e2")], None, "no leader"),
        ([cand("e1", leader=True), cand("e4", learner=True)], "e4", "is a learner"),
        ([cand("e1", leader=True), cand("e2", healthy=False)], "e2", "not healthy"),
        ([cand("e1", leader=True)], "e9", "no member named"),
    ],
)
def test_refusals(members: list[Candidate], wanted: str | None, error: str) -> None:
    with pytest.raises(PlanError, match=error):
        choose_source(members, wanted)


def test_a_named_member_is_read_when_it_is_a_healthy_voter() -> None:
    assert choose_source([cand("e1", leader=True), cand("e2")], "e1").name == "e1"


def request(tmp_path: Path, **over: object) -> BackupRequest:
    values: dict[str, object] = dict(
        backup_id="20261202T120000Z",
        targets=("local",),
        staging_root=tmp_path / "backups/.staging",
        stale_staging=(),
        status_tool="/usr/bin/etcdctl",
        recipients=(),
        recipients_base=str(tmp_path),
        level=3,
        base_manifest={"id": "20261202T120000Z"},
    )
    values.update(over)
    return BackupRequest(**values)  # type: ignore[arg-type]


def test_backup_plan_order_and_names(tmp_path: Path) -> None:
    plan = plan_backup(request(tmp_path, stale_staging=("20261201T000000Z",)), cand("e2"))
    assert [s.id for s in plan.steps] == [
        "backup/clean-staging:20261201T000000Z",
        "backup/snapshot",
        "backup/check",
        "backup/pack",
        "backup/manifest",
        "backup/store:local",
        "backup/clean",
    ]
    take = plan.steps[1].action
    assert isinstance(take, TakeSnapshot) and take.member == "e2" and take.url == "https://e2:2379"
    store = plan.steps[5].action
    assert isinstance(store, StoreBackup)
    # the manifest goes last: a listing never shows a backup whose data is not there yet
    assert [k for _, k in store.files] == [
        "20261202T120000Z.snapshot.zst",
        "20261202T120000Z.manifest.json",
    ]
    clean = plan.steps[0].action
    assert isinstance(clean, RemoveTree) and clean.marker == ".staging"
    assert not plan.destructive  # a backup destroys nothing: it runs without a question


def test_an_encrypted_backup_is_stored_as_age(tmp_path: Path) -> None:
    plan = plan_backup(request(tmp_path, recipients=("age1abc", "keys.txt")), cand("e1", leader=True))
    store = next(s.action for s in plan.steps if isinstance(s.action, StoreBackup))
    assert store.files[0][1] == "20261202T120000Z.snapshot.zst.age"
    assert "age-encrypted" in next(s.reason for s in plan.steps if s.id == "backup/pack")


def test_prune_deletes_with_a_question_and_keeps_the_newest_verified(tmp_path: Path) -> None:
    t0 = datetime(2026, 12, 2, tzinfo=UTC)
    listed = [
        Listed(f"2026120{d}T000000Z", t0 - timedelta(days=d), d != 1, (f"m{d}", f"d{d}")) for d in range(4)
    ]
    plan, decision = plan_prune("s3", listed, Retention(last=2, hourly=0, daily=0, weekly=0, monthly=0))
    assert set(decision.keep) == {"20261200T000000Z", "20261202T000000Z"}
    assert [s.id for s in plan.steps] == [
        "backup/delete:s3/20261201T000000Z",
        "backup/delete:s3/20261203T000000Z",
    ]
    assert all(s.destroys for s in plan.steps)
    first = plan.steps[0].action
    assert isinstance(first, DeleteBackup) and first.keys == ("m1", "d1")  # the manifest first


def test_a_backup_id_already_taken_moves_on_a_second() -> None:
    from etcdforge.verbs.backup.run import unused_time

    t0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    assert unused_time(t0, set()) == t0
    taken = {"20261202T120000Z", "20261202T120001Z"}
    assert unused_time(t0, taken) == t0 + timedelta(seconds=2)
