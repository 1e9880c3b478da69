"""The hosts-mode planner as pure code: fresh hosts, no-op, drift, rolling restarts, safety refusals."""

from __future__ import annotations

import hashlib
import json

import pytest
from specs import HOSTS3

from etcdforge import layout
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView, MemberView
from etcdforge.observe.hosts import (
    FileState,
    HostObserved,
    parse_etcd_version,
    parse_files,
    parse_listeners,
    parse_observation,
    parse_systemctl_show,
)
from etcdforge.plan import HostCommand, MoveLeader, Plan, PutFile, RestartMember, StartMembers, UploadFile
from etcdforge.verbs.apply.plan import BinarySource, managed_dirs, plan_apply

SPEC = HOSTS3
NAMES = ("etcd1", "etcd2", "etcd3")
SYSTEM = BinarySource(kind="system")
IDS = {"etcd1": 11, "etcd2": 22, "etcd3": 33}


def pki_for(member: str, *, serial: str = "1") -> dict[str, bytes]:
    return {name: f"{name}:{serial}".encode() for name in layout.pki_names(member)}


def desired(**overrides: dict[str, bytes]) -> dict[str, tuple[layout.DesiredFile, ...]]:
    return {
        m.name: layout.desired_files(SPEC, m, overrides.get(m.name, pki_for(m.name))) for m in SPEC.members
    }


def host(
    member: str, *, fresh: bool = False, running: bool = True, version: str = "3.4.23", **changes: object
) -> HostObserved:
    files: dict[str, FileState | None] = {}
    texts: dict[str, bytes | None] = {}
    for f in desired()[member]:
        files[f.path] = (
            None if fresh else FileState(hashlib.sha256(f.content).hexdigest(), f.mode, f.owner, f.group)
        )
        if f.path in (layout.CONFIG, layout.UNIT):
            texts[f.path] = None if fresh else f.content
    dirs = {
        layout.ETC_DIR: (0o755, "root", "root"),
        layout.WANTS_DIR: (0o755, "root", "root"),
        layout.PKI_DIR: (0o750, "root", "etcd"),
        layout.DEFAULT_DATA_DIR: (0o700, "etcd", "etcd"),
    }
    base = HostObserved(
        member=member,
        etcd_user=True,
        files=files,
        dirs={d: None for d in dirs} if fresh else dirs,
        texts=texts,
        active_state="active" if running and not fresh else "inactive",
        unit_file_state="" if fresh else "enabled",
        has_data=not fresh,
        binary_sha256="b" * 64,
        binary_version=version,
    )
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def cluster(leader: str = "etcd1") -> ClusterView:
    return ClusterView(
        tuple(
            MemberView(IDS[n], n, (f"https://10.213.77.{i + 1}:2380",), False, True, n == leader)
            for i, n in enumerate(NAMES)
        )
    )


def ids(plan: Plan) -> list[str]:
    return [s.id for s in plan.steps]


def test_fresh_hosts_get_everything_then_start_together() -> None:
    hosts = {n: host(n, fresh=True) for n in NAMES}
    plan = plan_apply(SPEC, desired(), hosts, ClusterView(reachable=False), SYSTEM)
    steps = ids(plan)
    assert steps[-2:] == ["cluster/start", "cluster/wait-healthy"]
    start = plan.steps[-2].action
    assert isinstance(start, StartMembers) and start.members == NAMES
    for n in NAMES:
        for d in managed_dirs(SPEC):
            assert f"{n}/dir:{d}" in steps
        for path in layout.managed_paths(SPEC):
            assert f"{n}/file:{path}" in steps
        assert f"{n}/daemon-reload" in steps and f"{n}/enable" in steps
    # preparation of all hosts is one concurrent group (one batch per host), in dependency order per host
    prepare = [s for s in plan.steps if s.group == "prepare"]
    assert len(prepare) == len(plan.steps) - 2
    etcd1 = [s.id.split("/", 1)[1].split(":")[0] for s in prepare if s.host == "etcd1"]
    assert etcd1 == ["dir"] * 4 + ["file"] * 8 + ["daemon-reload", "enable"]
    # keys are 0600 etcd:etcd and marked secret; the CA key is nowhere
    for s in plan.steps:
        if isinstance(s.action, PutFile) and s.action.path.endswith("-key.pem"):
            assert (s.action.mode, s.action.owner, s.action.secret) == (0o600, "etcd", True)
        assert "ca-key" not in s.id


def test_up_to_date_cluster_plans_nothing() -> None:
    hosts = {n: host(n) for n in NAMES}
    assert plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM).empty


def test_edited_unit_is_shown_as_a_diff_and_restarts_only_that_member() -> None:
    hosts = {n: host(n) for n in NAMES}
    edited = b"[Service]\nExecStart=/usr/bin/etcd --debug\n"
    files = dict(hosts["etcd2"].files)
    files[layout.UNIT] = FileState(hashlib.sha256(edited).hexdigest(), 0o644, "root", "root")
    hosts["etcd2"] = host("etcd2", files=files, texts={layout.CONFIG: None, layout.UNIT: edited})
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert ids(plan) == [
        "etcd2/file:/etc/systemd/system/etcd.service",
        "etcd2/daemon-reload",
        "etcd2/enable",
        "etcd2/restart",
    ]
    put = plan.steps[0].action
    assert isinstance(put, PutFile)
    assert "-ExecStart=/usr/bin/etcd --debug" in put.diff
    assert "+Type=notify" in put.diff


def test_deleted_certificate_is_restored_without_a_restart() -> None:
    hosts = {n: host(n) for n in NAMES}
    files = dict(hosts["etcd1"].files)
    files[f"{layout.PKI_DIR}/server.pem"] = None
    hosts["etcd1"] = host("etcd1", files=files)
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert ids(plan) == ["etcd1/file:/etc/etcd/pki/server.pem"]
    assert plan.steps[0].reason == "missing"


def test_renewed_leaf_needs_no_restart_but_a_new_ca_does() -> None:
    hosts = {n: host(n) for n in NAMES}
    renewed = pki_for("etcd3")
    renewed["etcd3-server.pem"] = b"new"
    plan = plan_apply(SPEC, desired(etcd3=renewed), hosts, cluster(), SYSTEM)
    assert ids(plan) == ["etcd3/file:/etc/etcd/pki/server.pem"]
    new_ca = pki_for("etcd3")
    new_ca["ca.pem"] = b"other CA"
    plan = plan_apply(SPEC, desired(etcd3=new_ca), hosts, cluster(), SYSTEM)
    assert ids(plan) == ["etcd3/file:/etc/etcd/pki/ca.pem", "etcd3/restart"]


def test_wrong_key_mode_is_fixed_without_restart() -> None:
    hosts = {n: host(n) for n in NAMES}
    files = dict(hosts["etcd2"].files)
    key = f"{layout.PKI_DIR}/peer-key.pem"
    old = files[key]
    assert old is not None
    files[key] = FileState(old.sha256, 0o644, "root", "root")
    hosts["etcd2"] = host("etcd2", files=files)
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert ids(plan) == [f"etcd2/file:{key}"]
    assert plan.steps[0].reason == "is 0644 root:root, want 0600 etcd:etcd"


def test_config_change_rolls_one_at_a_time_leader_last_after_handover() -> None:
    spec = SPEC.model_copy(update={"etcd": SPEC.etcd.model_copy(update={"snapshot_count": 5000})})
    hosts = {n: host(n) for n in NAMES}
    want = {m.name: layout.desired_files(spec, m, pki_for(m.name)) for m in spec.members}
    plan = plan_apply(spec, want, hosts, cluster(leader="etcd2"), SYSTEM)
    order = [s for s in ids(plan) if not s.split("/")[1].startswith("file:")]
    assert order == ["etcd1/restart", "etcd3/restart", "etcd2/move-leader", "etcd2/restart"]
    move = next(s.action for s in plan.steps if isinstance(s.action, MoveLeader))
    assert move.to == "etcd1"
    assert all(
        isinstance(s.action, RestartMember) and not s.group for s in plan.steps if s.id.endswith("/restart")
    )


def test_stopped_member_is_started() -> None:
    hosts = {n: host(n) for n in NAMES}
    hosts["etcd3"] = host("etcd3", running=False, active_state="failed")
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert ids(plan) == ["cluster/start", "cluster/wait-healthy"]
    assert plan.steps[0].reason == "not running"


def test_data_unknown_to_the_cluster_is_refused_unless_forced() -> None:
    hosts = {n: host(n) for n in NAMES}
    stranger = ClusterView((MemberView(11, "etcd1", ("https://10.213.77.1:2380",), False, True, True),))
    with pytest.raises(PlanError, match="does not know this member"):
        plan_apply(SPEC, desired(), hosts, stranger, SYSTEM)
    assert plan_apply(SPEC, desired(), hosts, stranger, SYSTEM, force=True).empty


def test_partial_data_without_a_cluster_is_refused() -> None:
    hosts = {n: host(n, running=False) for n in NAMES}
    hosts["etcd2"] = host("etcd2", running=False, has_data=False)
    with pytest.raises(PlanError, match="etcd2 have no data"):
        plan_apply(SPEC, desired(), hosts, ClusterView(reachable=False), SYSTEM)


def test_missing_or_bad_binaries_are_refused() -> None:
    hosts = {n: host(n) for n in NAMES}
    hosts["etcd2"] = host("etcd2", binary_version=None)
    with pytest.raises(PlanError, match="no working etcd at /usr/bin/etcd on etcd2"):
        plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    hosts = {n: host(n, version="3.5.1") for n in NAMES}
    with pytest.raises(PlanError, match="data-inconsistency"):
        plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    hosts = {n: host(n, version="3.4.20") for n in NAMES}
    with pytest.raises(PlanError, match="production minimum"):
        plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)


def test_upload_only_where_the_binary_differs() -> None:
    spec = SPEC.model_copy(update={"etcd": SPEC.etcd.model_copy(update={"source": "upload"})})
    want = {m.name: layout.desired_files(spec, m, pki_for(m.name)) for m in spec.members}
    # the unit points at /usr/local/bin/etcd now, so every unit changes too; look at uploads only
    hosts = {n: host(n) for n in NAMES}
    hosts["etcd1"] = host("etcd1", binary_sha256="a" * 64)
    source = BinarySource(kind="upload", local_path="/opt/etcd/etcd", sha256="a" * 64, version="3.4.23")
    plan = plan_apply(spec, want, hosts, cluster(), source)
    uploads = [s for s in plan.steps if isinstance(s.action, UploadFile)]
    assert {s.host for s in uploads} == {"etcd2", "etcd3"}
    assert {s.action.path for s in uploads} == {
        "/usr/local/bin/etcd",
        "/usr/local/bin/etcdctl",
        "/usr/local/bin/etcdutl",
    }


def test_missing_user_and_wrong_dirs_are_created() -> None:
    hosts = {n: host(n) for n in NAMES}
    dirs = dict(hosts["etcd1"].dirs)
    dirs[layout.DEFAULT_DATA_DIR] = (0o755, "root", "root")
    hosts["etcd1"] = host("etcd1", etcd_user=False, dirs=dirs)
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert ids(plan) == ["etcd1/create-user", "etcd1/dir:/var/lib/etcd"]
    cmd = plan.steps[1].action
    assert isinstance(cmd, HostCommand)
    assert cmd.argv == ("install", "-d", "-m", "0700", "-o", "etcd", "-g", "etcd", "/var/lib/etcd")


def test_plan_json_masks_secrets_and_keeps_diffs() -> None:
    hosts = {n: host(n, fresh=True) for n in NAMES}
    data = plan_apply(SPEC, desired(), hosts, ClusterView(reachable=False), SYSTEM).to_json()
    text = json.dumps(data)
    assert "etcd1-server-key.pem:1" not in text  # key contents never appear
    keys = [s for s in data["steps"] if s.get("path", "").endswith("-key.pem")]
    assert keys and all(s["sha256"] == "(secret)" for s in keys)


def test_observation_parsers() -> None:
    assert parse_files(
        ["abc 600 etcd etcd /etc/etcd/pki/a key.pem", "- 755 root root /etc", "missing - - - /x"]
    ) == {
        "/etc/etcd/pki/a key.pem": ("abc", 0o600, "etcd", "etcd"),
        "/etc": ("-", 0o755, "root", "root"),
        "/x": None,
    }
    sections = parse_observation("@user\nyes\n@text /etc/etcd/etcd.conf.yml\n-\n@files\n@end\n")
    assert sections["user"] == ["yes"] and sections["text /etc/etcd/etcd.conf.yml"] == ["-"]
    with pytest.raises(ValueError, match="cut short"):
        parse_observation("@user\nyes\n")
    assert parse_systemctl_show("ActiveState=active\nUnitFileState=enabled\n") == {
        "ActiveState": "active",
        "UnitFileState": "enabled",
    }
    assert parse_etcd_version("etcd Version: 3.4.23\nGit SHA: x\n") == "3.4.23"
    assert parse_etcd_version("bash: etcd: not found") is None


def test_a_port_taken_on_a_stopped_member_is_refused_before_any_change() -> None:
    hosts = {n: host(n, fresh=True) for n in NAMES}
    hosts["etcd2"] = host("etcd2", fresh=True, listeners=(("0.0.0.0", 2379, "python3"),))
    with pytest.raises(PlanError, match=r"etcd2: port 2379 on 0\.0\.0\.0 is already in use by python3"):
        plan_apply(SPEC, desired(), hosts, ClusterView(reachable=False), SYSTEM)
    # a running member's own listeners are fine
    hosts = {n: host(n, listeners=(("10.213.77.1", 2379, "etcd"),)) for n in NAMES}
    assert plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM).empty


def test_parse_listeners() -> None:
    out = (
        'LISTEN 0 4096 127.0.0.2:2380 0.0.0.0:* users:(("etcd",pid=18483,fd=7))\n'
        'LISTEN 0 128 [::]:22 [::]:* users:(("sshd",pid=1,fd=4))\n'
        "LISTEN 0 5 0.0.0.0:2379 0.0.0.0:*\n"
    )
    assert parse_listeners(out) == (("127.0.0.2", 2380, "etcd"), ("::", 22, "sshd"), ("0.0.0.0", 2379, "?"))
