"""The version graph, the upgrade planner (pure) and the rules ``apply`` shares."""

from __future__ import annotations

import pytest

from etcdforge import versions
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView, MemberView
from etcdforge.plan import CheckMember, MoveLeader, SwitchBinary
from etcdforge.verbs.upgrade.plan import UpgradeInputs, plan_upgrade

V = versions.parse


@pytest.mark.parametrize(
    ("current", "target", "kind_or_refusal"),
    [
        ("3.4.23", "3.4.23", "none"),
        ("3.4.22", "3.4.23", "patch"),
        ("3.4.23", "3.5.17", "minor"),
        ("3.5.26", "3.6.4", "minor"),
        ("3.4.23", "3.6.4", "one minor at a time: upgrade 3.4.23 to the latest 3.5.x first"),
        ("3.4.20", "3.5.17", "upgrade to 3.4.22 or a later 3.4.x first"),
        ("3.5.17", "3.6.4", "upgrade to 3.5.26 or a later 3.5.x first"),
        ("3.4.23", "3.5.1", "3.5.0–3.5.2 can lose committed writes"),
        ("3.5.17", "3.4.23", "older than the running 3.5.17: a downgrade"),
        ("3.5.17", "3.7.0", "newer than the releases etcdforge knows"),
    ],
)
def test_the_version_graph(current: str, target: str, kind_or_refusal: str) -> None:
    path = versions.check_path(V(current), V(target), production=True)
    assert (path.refused or path.kind).startswith(kind_or_refusal) or kind_or_refusal in (path.refused or "")


def test_unsafe_releases_only_with_the_flag_or_locally_and_downgrades_only_where_supported() -> None:
    local = versions.check_path(V("3.4.23"), V("3.5.1"), production=False)
    assert local.kind == "minor" and "development and tests only" in local.warnings[0]
    flagged = versions.check_path(V("3.4.23"), V("3.5.1"), production=True, allow_unsafe=True)
    assert flagged.kind == "minor" and flagged.warnings
    assert versions.check_path(V("3.5.17"), V("3.5.16"), production=True, downgrade=True).kind == "downgrade"
    for current, target, why in (
        ("3.6.4", "3.5.26", "downgrade API"),
        ("3.5.17", "3.4.23", "3.4.32+"),
    ):
        refused = versions.check_path(V(current), V(target), production=True, downgrade=True).refused
        assert refused is not None and why in refused
    assert versions.removed_settings(V("3.6.0")) >= {"enable-v2"} and not versions.removed_settings(
        V("3.5.9")
    )


def member(name: str, version: str = "3.4.23", *, leader: bool = False, serving: bool = True) -> MemberView:
    n = int(name[-1])
    return MemberView(
        n, name, (f"https://127.0.0.{n}:2380",), False, serving, leader, version,
        f"https://127.0.0.{n}:2379", serving, 2**20, 2**19, 9,
    )  # fmt: skip


def inputs(*members: MemberView, **kw: object) -> UpgradeInputs:
    base: dict[str, object] = {
        "view": ClusterView(members),
        "target": V("3.5.1"),
        "binary": "/opt/etcd-3.5.1/etcd",
        "binary_version": V("3.5.1"),
        "production": False,
        "record_path": "/ws/upgrade.json",
        "spec_path": "/ws/cluster.yaml",
        "spec_after": b"spec",
    }
    base.update(kw)
    return UpgradeInputs(**base)  # type: ignore[arg-type]


THREE = (member("etcd1"), member("etcd2", leader=True), member("etcd3"))


def test_followers_first_the_leader_last_after_handing_over_each_checked() -> None:
    plan, warnings, note = plan_upgrade(inputs(*THREE))
    ids = [s.id for s in plan.steps]
    assert ids == [
        "upgrade/record:etcd1", "etcd1/switch-binary", "etcd1/check",
        "upgrade/record:etcd3", "etcd3/switch-binary", "etcd3/check",
        "upgrade/record:etcd2", "etcd2/move-leader", "etcd2/switch-binary", "etcd2/check",
        "cluster/wait-version", "workspace/write-spec", "upgrade/done",
    ]  # fmt: skip
    move = plan.steps[7].action
    assert isinstance(move, MoveLeader) and move.to == "etcd3"
    switch = plan.steps[1].action
    assert isinstance(switch, SwitchBinary) and switch.binary == "/opt/etcd-3.5.1/etcd"
    check = plan.steps[2].action
    assert isinstance(check, CheckMember) and check.version == "3.5.1" and check.url.endswith(".1:2379")
    assert "3 member(s)" in note and warnings  # 3.5.1 is for development only


def test_a_resumed_upgrade_skips_members_done_and_brings_back_the_one_it_left_down() -> None:
    mixed = (
        member("etcd1", "3.5.1"),
        member("etcd2", leader=True),
        member("etcd3", serving=False, version=""),
    )
    plan, _, _ = plan_upgrade(inputs(*mixed, resuming="etcd3"))
    ids = [s.id for s in plan.steps]
    assert ids[:3] == ["upgrade/record:etcd3", "etcd3/switch-binary", "etcd3/check"]
    assert "etcd1/switch-binary" not in ids and ids.index("etcd2/switch-binary") > ids.index("etcd3/check")
    done = (member("etcd1", "3.5.1"), member("etcd2", "3.5.1", leader=True), member("etcd3", "3.5.1"))
    plan, _, note = plan_upgrade(inputs(*done))
    assert [s.id for s in plan.steps] == ["cluster/wait-version", "workspace/write-spec", "upgrade/done"]
    assert note == "every member runs etcd 3.5.1"


def test_the_preflight_refuses_in_one_line() -> None:
    down = (member("etcd1"), member("etcd2", leader=True), member("etcd3", serving=False))
    with pytest.raises(PlanError, match="needs all of them healthy first: etcd3 is not"):
        plan_upgrade(inputs(*down))
    with pytest.raises(PlanError, match="an alarm is active"):
        plan_upgrade(inputs(view=ClusterView(THREE, alarms=(("etcd1", "NOSPACE"),))))
    with pytest.raises(PlanError, match="membership change is in flight"):
        plan_upgrade(inputs(*THREE, membership_change=True))
    with pytest.raises(PlanError, match=r"is etcd 3\.5\.2, not 3\.5\.1"):
        plan_upgrade(inputs(*THREE, binary_version=V("3.5.2")))
    with pytest.raises(PlanError, match="safety snapshot"):
        plan_upgrade(inputs(*THREE, free_bytes=10))
    with pytest.raises(PlanError, match=r"3\.5\.0–3\.5\.2"):
        plan_upgrade(inputs(*THREE, production=True))
    with pytest.raises(PlanError, match="one minor at a time"):
        plan_upgrade(inputs(*THREE, target=V("3.6.4"), binary_version=V("3.6.4")))
    with pytest.raises(PlanError, match=r"from 3\.4 to 3\.5 with auth on"):  # etcd's upgrade guide
        plan_upgrade(inputs(*THREE, auth_enabled=True))
    assert plan_upgrade(inputs(*THREE, auth_enabled=False))[0].steps


def test_apply_follows_the_same_rules_for_a_new_release() -> None:
    from test_remote_plan import NAMES, SPEC, cluster, host, pki_for

    from etcdforge import layout
    from etcdforge.verbs.apply.plan import BinarySource, plan_apply

    spec = SPEC.model_copy(update={"etcd": SPEC.etcd.model_copy(update={"source": "upload"})})
    want = {m.name: layout.desired_files(spec, m, pki_for(m.name)) for m in spec.members}
    hosts = {n: host(n, version="3.4.23") for n in NAMES}
    skip = BinarySource(kind="upload", local_path="/opt/etcd/etcd", sha256="a" * 64, version="3.6.4")
    with pytest.raises(PlanError, match="one minor at a time"):
        plan_apply(spec, want, hosts, cluster(), skip)
    down = BinarySource(kind="upload", local_path="/opt/etcd/etcd", sha256="a" * 64, version="3.4.22")
    with pytest.raises(PlanError, match="a downgrade"):
        plan_apply(spec, want, hosts, cluster(), down)
