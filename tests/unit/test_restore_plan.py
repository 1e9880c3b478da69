"""The restore and recover planners (pure): order, the new token everywhere, --bump-revision only where
the tool has it, a newer etcd's backup refused, and what is confirmed before anything is destroyed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from specs import HOSTS3

from etcdforge.backup.manifest import Check, Manifest, Stored
from etcdforge.errors import PlanError
from etcdforge.plan import HostCommand, PutFile, RestoreData, UploadFile, WriteFile
from etcdforge.verbs.recover.plan import Survivor, choose_survivor, plan_recover, with_force
from etcdforge.verbs.restore.plan import MemberPlace, Record, RestoreInputs, can_bump, plan_restore

MANIFEST = Manifest(
    id="20261202T120000Z",
    cluster=HOSTS3.name,
    cluster_id="abc",
    members=(),
    source_member="etcd2",
    taken=datetime(2026, 12, 2, 12, tzinfo=UTC),
    revision=90,
    etcd_version="3.5.1",
    db_size=1 << 20,
    raw_sha256="f" * 64,
    stored=Stored(key="20261202T120000Z.snapshot.zst", size=10, sha256="e" * 64),
    check=Check(trailer=True, bbolt_pages=9, revision=100),
    spec="",
    ca_certs="",
    etcdforge_version="test",
)


def inputs(version: tuple[int, int, int] = (3, 5, 1), *, exists: bool = False) -> RestoreInputs:
    return RestoreInputs(
        spec=HOSTS3,
        spec_path="/ws/cluster.yaml",
        manifest=MANIFEST,
        record=Record(MANIFEST.id, "nas", "prod-restore-x", "20261202T130000Z"),
        record_path="/ws/restore.json",
        record_exists=exists,
        staging="/ws/backups/.restore",
        places={
            m.name: MemberPlace("/var/lib/etcd", "/var/lib/etcd.restore-x.db", "/usr/bin", "etcd")
            for m in HOSTS3.members
        },
        upload=True,
        tool_version=version,
        identities=(),
    )


def test_restore_on_hosts_in_order_with_a_new_token() -> None:
    plan, warnings = plan_restore(inputs())
    ids = [s.id for s in plan.steps]
    assert ids[:2] == ["restore/fetch", "restore/record"]  # a backup failing its checks leaves no record
    assert ids.index("etcd1/upload-snapshot") < ids.index("etcd1/stop") < ids.index("etcd1/restore-data")
    assert ids.index("etcd3/restore-data") < ids.index("workspace/write-spec") < ids.index("cluster/start")
    assert ids[-2:] == ["restore/clean", "restore/done"] and "restore/check" in ids
    upload = next(s.action for s in plan.steps if s.id == "etcd2/upload-snapshot")
    assert isinstance(upload, UploadFile) and upload.sha256 == MANIFEST.raw_sha256
    restore = next(s.action for s in plan.steps if s.id == "etcd2/restore-data")
    assert isinstance(restore, RestoreData) and restore.owner == "etcd"
    assert "--initial-cluster-token=prod-restore-x" in restore.restore_args
    assert restore.aside == "/var/lib/etcd.before-restore-20261202T130000Z"
    spec = next(s.action for s in plan.steps if s.id == "workspace/write-spec")
    assert isinstance(spec, WriteFile) and b"token: prod-restore-x" in spec.content
    config = next(s.action for s in plan.steps if s.id == "etcd1/write-config")
    assert isinstance(config, PutFile) and b"initial-cluster-token: prod-restore-x" in config.content
    assert any(isinstance(s.action, HostCommand) and "enable" in s.action.argv for s in plan.steps)
    # every member's data is only moved aside, and that is confirmed first
    assert [s.id for s in plan.destructive] == [
        "etcd1/restore-data",
        "etcd2/restore-data",
        "etcd3/restore-data",
    ]
    assert all("moved aside" in s.destroys for s in plan.destructive)
    # 3.5.1 has no --bump-revision: the revision goes back, and the user is told to restart watchers
    assert "--mark-compacted" not in restore.restore_args and "restart every watcher" in warnings[0]


def test_a_resumed_restore_does_not_write_its_record_again() -> None:
    plan, _ = plan_restore(inputs(exists=True))
    assert "restore/record" not in [s.id for s in plan.steps]


@pytest.mark.parametrize(
    ("version", "bump"),
    [((3, 4, 23), False), ((3, 4, 27), True), ((3, 5, 9), False), ((3, 5, 10), True), ((3, 6, 0), True)],
)
def test_bump_revision_where_the_tool_has_it(version: tuple[int, int, int], bump: bool) -> None:
    assert can_bump(version) is bump
    if version[:2] >= (3, 5):
        plan, warnings = plan_restore(inputs(version))
        restore = next(s.action for s in plan.steps if s.id == "etcd1/restore-data")
        assert isinstance(restore, RestoreData)
        assert ("--mark-compacted" in restore.restore_args) is bump and (not warnings) is bump


def test_a_backup_of_a_newer_etcd_is_refused() -> None:
    with pytest.raises(PlanError, match="cannot read a newer etcd's data"):
        plan_restore(inputs((3, 4, 23)))


def test_recover_picks_the_survivor_with_the_highest_applied_index() -> None:
    survivors = [Survivor("etcd1", False, 0), Survivor("etcd2", True, 120), Survivor("etcd3", True, 150)]
    assert choose_survivor(survivors).name == "etcd3"
    assert choose_survivor(survivors, "etcd2").name == "etcd2"
    with pytest.raises(PlanError, match="does not answer"):
        choose_survivor(survivors, "etcd1")
    with pytest.raises(PlanError, match="restore a backup instead"):
        choose_survivor([Survivor("etcd1", False, 0)])


def test_recover_forces_once_then_restarts_normally_and_wipes_the_others() -> None:
    plan = plan_recover(
        HOSTS3, Survivor("etcd2", True, 150, 0x22), record_path="/ws/recover.json", record=b"{}",
        done_record=b"{}", spec_path="/ws/cluster.yaml", safety=(), member_paths=None,
    )  # fmt: skip
    ids = [s.id for s in plan.steps]
    assert ids.index("etcd2/force-config") < ids.index("etcd2/start-forced") < ids.index("etcd2/stop-forced")
    assert ids.index("etcd2/stop-forced") < ids.index("etcd2/config") < ids.index("etcd2/start")
    forced = next(s.action for s in plan.steps if s.id == "etcd2/force-config")
    normal = next(s.action for s in plan.steps if s.id == "etcd2/config")
    assert isinstance(forced, PutFile) and isinstance(normal, PutFile)
    assert forced.content == with_force(normal.content) and b"force-new-cluster" not in normal.content
    assert {s.id for s in plan.destructive} == {"etcd2/force-config", "etcd1/wipe-data", "etcd3/wipe-data"}
    spec = next(s.action for s in plan.steps if s.id == "workspace/write-spec")
    assert isinstance(spec, WriteFile) and b"etcd1" not in spec.content and b"etcd2" in spec.content
