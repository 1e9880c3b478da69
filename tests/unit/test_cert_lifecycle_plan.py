"""Pure parts of `pki renew` and `pki rotate-ca`: selection, install steps, verification, the rotation
record, the phase plans (order, leader last, resume, records), and plan_pki's force/new-key options."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from specs import HOSTS3

from etcdforge import certs, layout
from etcdforge.errors import PkiError, PlanError
from etcdforge.observe.cluster import ClusterView, MemberView
from etcdforge.observe.hosts import FileState, HostObserved
from etcdforge.pki import create_ca, issue, observe_pki, plan_pki
from etcdforge.pki.apply import apply_pki
from etcdforge.pki.rotation import PHASES, RotationState, bundle
from etcdforge.plan import (
    InstallMemberPki,
    MoveLeader,
    PutFile,
    RestartMember,
    VerifyPresented,
    WaitHealthy,
    WriteFile,
)
from etcdforge.verbs.renew import plan as renew_plan
from etcdforge.verbs.rotate_ca import plan as rplan
from etcdforge.workspace import Workspace

SPEC = HOSTS3
NOW = datetime(2026, 11, 28, tzinfo=UTC)
WS = Workspace(Path("/ws"))


# --- renew: selection -------------------------------------------------------------------------------


def test_select_requests_all_by_default_or_the_named_members_and_clients() -> None:
    requests = certs.cert_requests(SPEC)
    assert renew_plan.select_requests(SPEC, requests) == requests
    names = [r.name for r in renew_plan.select_requests(SPEC, requests, ["etcd2"], ["admin"])]
    assert names == ["etcd2-server", "etcd2-peer", "admin-client"]


@pytest.mark.parametrize(("members", "clients", "text"), [(["etcd9"], [], "etcd9"), ([], ["bob"], "bob")])
def test_select_requests_refuses_unknown_names(members: list[str], clients: list[str], text: str) -> None:
    with pytest.raises(PlanError, match=text):
        renew_plan.select_requests(SPEC, certs.cert_requests(SPEC), members, clients)


# --- renew: install steps ---------------------------------------------------------------------------


def _pki(serial: str) -> dict[str, bytes]:
    return {n: f"{n}:{serial}".encode() for m in SPEC.members for n in layout.pki_names(m.name)}


def _desired(serial: str) -> dict[str, tuple[layout.DesiredFile, ...]]:
    pki = _pki(serial)
    return {m.name: layout.desired_files(SPEC, m, pki) for m in SPEC.members}


def _host(member: str, serial: str, *, key_mode: int = 0o600) -> HostObserved:
    files = {}
    for f in _desired(serial)[member]:
        mode = key_mode if f.secret else f.mode
        files[f.path] = FileState(hashlib.sha256(f.content).hexdigest(), mode, f.owner, f.group)
    return HostObserved(
        member=member, etcd_user=True, files=files, dirs={}, texts={}, active_state="active",
        unit_file_state="enabled", has_data=True, binary_sha256=None, binary_version="3.4.23",
    )  # fmt: skip


def test_host_install_writes_only_changed_leaf_files_never_the_ca_config_or_unit() -> None:
    hosts = {m.name: _host(m.name, "1") for m in SPEC.members}
    new = _desired("2")  # every file differs, the CA, config and unit included
    steps = renew_plan.host_install_steps(SPEC, ["etcd1", "etcd2", "etcd3"], new, hosts, {})
    paths = {(s.host, s.action.path) for s in steps if isinstance(s.action, PutFile)}
    leaf = {"/etc/etcd/pki/server.pem", "/etc/etcd/pki/server-key.pem", "/etc/etcd/pki/peer.pem",
            "/etc/etcd/pki/peer-key.pem"}  # fmt: skip
    assert {p for _, p in paths} == leaf
    assert len(steps) == 12
    assert all("no restart" in s.reason for s in steps)


def test_host_install_is_empty_when_hosts_match_and_repairs_a_mode() -> None:
    hosts = {m.name: _host(m.name, "1") for m in SPEC.members}
    assert renew_plan.host_install_steps(SPEC, ["etcd1", "etcd2", "etcd3"], _desired("1"), hosts, {}) == []
    hosts["etcd2"] = _host("etcd2", "1", key_mode=0o644)
    steps = renew_plan.host_install_steps(SPEC, ["etcd2"], _desired("1"), hosts, {})
    assert [s.id for s in steps] == [
        "etcd2/file:/etc/etcd/pki/server-key.pem",
        "etcd2/file:/etc/etcd/pki/peer-key.pem",
    ]
    pending = {"etcd3": {"/etc/etcd/pki/peer.pem": "/ws/pki/etcd3-peer.pem"}}
    steps = renew_plan.host_install_steps(SPEC, ["etcd3"], _desired("1"), hosts, pending)
    assert [s.reason for s in steps] == ["renewed certificate (in place, no restart)"]
    # its bytes are a deferred value: the workspace file, read when the step runs
    put = steps[0].action
    assert isinstance(put, PutFile) and put.source == "/ws/pki/etcd3-peer.pem" and put.content == b""
    assert put.describe()["from"] == "/ws/pki/etcd3-peer.pem" and "sha256" not in put.describe()


def test_local_install_copies_leaf_files_only_and_repairs_stale_copies(tmp_path: Path) -> None:
    from etcdforge.verbs.up.plan import member_pki_files

    ws = Workspace(tmp_path)
    control = {src: b"v1" for m in SPEC.members for src, _, _ in member_pki_files(ws, m.name)}
    installed = {m.name: {dst: b"v1" for _, dst, _ in member_pki_files(ws, m.name)} for m in SPEC.members}
    assert renew_plan.local_install_steps(ws, ["etcd1"], frozenset(), installed, control) == []
    steps = renew_plan.local_install_steps(
        ws, ["etcd1", "etcd2"], frozenset({"etcd2-peer"}), installed, control
    )
    assert [s.id for s in steps] == ["etcd2/install-pki"]
    action = steps[0].action
    assert isinstance(action, InstallMemberPki)
    assert all(not src.endswith("ca.pem") for src, _, _ in action.files)
    installed["etcd1"][ws.member_paths("etcd1").server_cert] = b"old"
    steps = renew_plan.local_install_steps(ws, ["etcd1"], frozenset(), installed, control)
    assert [s.id for s in steps] == ["etcd1/install-pki"] and "server.pem" in steps[0].reason


def test_verify_steps_check_client_and_peer_of_running_members() -> None:
    steps = renew_plan.verify_steps(
        SPEC, ["etcd1", "etcd2"], {"etcd1": True, "etcd2": False}, peer_required=False
    )
    actions = [s.action for s in steps]
    assert actions == [
        VerifyPresented("etcd1", "https://10.213.77.1:2379", "etcd1-server", True),
        VerifyPresented("etcd1", "https://10.213.77.1:2380", "etcd1-peer", False, peer=True),
    ]


# --- plan_pki: force and new keys ------------------------------------------------------------------------


def test_plan_pki_force_reissues_valid_leaves_keeping_or_replacing_keys(tmp_path: Path) -> None:
    ca = certs.ca_settings(SPEC)
    requests = certs.cert_requests(SPEC)
    first = plan_pki(ca, requests, observe_pki(tmp_path, None), NOW)
    apply_pki(tmp_path, first, NOW)
    observed = observe_pki(tmp_path, None)
    assert not plan_pki(ca, requests, observed, NOW).changes
    forced = plan_pki(ca, requests, observed, NOW, force=frozenset({"etcd1-server"}))
    assert [(s.name, s.reason, s.reuse_key) for s in forced.changes] == [
        ("etcd1-server", "renewal requested", True)
    ]
    fresh = plan_pki(ca, requests, observed, NOW, force=frozenset({"etcd1-server"}), new_keys=True)
    assert [s.reuse_key for s in fresh.changes] == [False]
    # the renewal window: with 400 days every one-year leaf is due
    due = plan_pki(ca, requests, observed, NOW, renew_before=timedelta(days=400))
    assert len(due.changes) == len(requests)


# --- the rotation record ---------------------------------------------------------------------------------


def test_rotation_state_round_trips_and_moves_through_the_phases() -> None:
    state = RotationState("trust-both", "a" * 64, "b" * 64, NOW.isoformat())
    state = state.with_restarted("etcd2").with_restarted("etcd2").with_restarted("etcd1")
    assert state.restarted == ("etcd2", "etcd1")
    assert RotationState.from_json(state.to_json(), "x") == state
    seen = [state.phase]
    while seen[-1] != "finish":
        state = state.next_phase()
        assert state.restarted == ()
        seen.append(state.phase)
    assert tuple(seen) == PHASES
    with pytest.raises(PkiError):
        state.next_phase()


@pytest.mark.parametrize(
    "doc",
    [b"not json", b"{}", json.dumps({"phase": "later", "old_ca_sha256": "a", "new_ca_sha256": "b",
                                    "started": "t"}).encode(),
     json.dumps({"phase": "reissue", "old_ca_sha256": "a", "new_ca_sha256": "b", "started": "t",
                 "restarted": "etcd1"}).encode()],
)  # fmt: skip
def test_a_damaged_rotation_record_is_a_clear_error(doc: bytes) -> None:
    with pytest.raises(PkiError, match="not a CA rotation record"):
        RotationState.from_json(doc, "state.json")


def test_bundle_keeps_the_given_order() -> None:
    old, new = create_ca(certs.ca_settings(SPEC), NOW), create_ca(certs.ca_settings(SPEC), NOW)
    assert bundle(old.cert, new.cert) == old.cert_pem() + new.cert_pem()


# --- rotation phase plans ---------------------------------------------------------------------------------


def _view(*, leader: str = "etcd1", learner: str = "", unhealthy: str = "", missing: str = "") -> ClusterView:
    return ClusterView(
        tuple(
            MemberView(i + 1, m.name, (), m.name == learner, m.name != unhealthy, m.name == leader)
            for i, m in enumerate(SPEC.members)
            if m.name != missing
        )
    )


def test_a_phase_needs_every_member_healthy_and_voting() -> None:
    rplan.check_ready(SPEC, _view())
    for kwargs, text in (
        ({"unhealthy": "etcd2"}, "etcd2 is not healthy"),
        ({"learner": "etcd3"}, "etcd3 is still a learner"),
        ({"missing": "etcd1"}, "etcd1 is not a member"),
    ):
        with pytest.raises(PlanError, match=text):
            rplan.check_ready(SPEC, _view(**kwargs))  # type: ignore[arg-type]


def test_a_resumed_trust_phase_brings_back_the_one_member_an_interrupted_run_left_stopped() -> None:
    restarting = frozenset({"etcd2"})
    assert rplan.check_ready(SPEC, _view(unhealthy="etcd2"), resumable=restarting) == {"etcd2"}
    # any other member down is not ours to start blindly
    with pytest.raises(PlanError, match="etcd3 is not healthy"):
        rplan.check_ready(SPEC, _view(unhealthy="etcd3"), resumable=restarting)
    two_down = ClusterView(
        tuple(
            MemberView(i, n, (), False, n == "etcd1", n == "etcd1")
            for i, n in enumerate(["etcd1", "etcd2", "etcd3"])
        )
    )
    with pytest.raises(PlanError, match="etcd3 is not healthy"):
        rplan.check_ready(SPEC, two_down, resumable=restarting)
    state = RotationState("trust-both", "a", "b", "t", restarted=("etcd1",))
    steps = rplan.trust_phase_steps(
        SPEC,
        WS,
        state,
        trusted_pem=b"B",
        leader="etcd3",
        timeout=60,
        down=frozenset({"etcd3"}),
    )
    gate = steps[0].action
    assert isinstance(gate, WaitHealthy) and gate.members == ("etcd1", "etcd2")
    # the stopped member (here the one etcd still calls leader) is started first, with no hand-over
    assert [s.action.member for s in steps if isinstance(s.action, RestartMember)] == ["etcd3", "etcd2"]
    assert not [s for s in steps if isinstance(s.action, MoveLeader)]


def test_trust_phase_on_hosts_restarts_one_at_a_time_leader_last_and_records_each() -> None:
    state = RotationState("trust-both", "a", "b", "t")
    steps = rplan.trust_phase_steps(SPEC, WS, state, trusted_pem=b"BUNDLE", leader="etcd1", timeout=60)
    kinds = [(s.id, type(s.action).__name__) for s in steps]
    assert kinds[0] == ("cluster/healthy", "WaitHealthy")
    restarts = [s.action.member for s in steps if isinstance(s.action, RestartMember)]
    assert restarts == ["etcd2", "etcd3", "etcd1"]
    moves = [(s.host, s.action.to) for s in steps if isinstance(s.action, MoveLeader)]
    assert moves == [("etcd1", "etcd2")]
    # every CA write carries the bundle and nothing else; a record follows every restart
    puts = [s.action for s in steps if isinstance(s.action, PutFile)]
    assert {(p.path, p.content) for p in puts} == {("/etc/etcd/pki/ca.pem", b"BUNDLE")}
    records = [RotationState.from_json(s.action.content, "x") for s in steps
               if isinstance(s.action, WriteFile) and s.action.path.endswith("state.json")]  # fmt: skip
    assert [(r.restarted, r.restarting) for r in records] == [
        ((), "etcd2"),
        (("etcd2",), None),
        (("etcd2",), "etcd3"),
        (("etcd2", "etcd3"), None),
        (("etcd2", "etcd3"), "etcd1"),
        (("etcd2", "etcd3", "etcd1"), None),
    ]
    order = [s.id for s in steps]
    for name in ("etcd2", "etcd3", "etcd1"):
        assert order.index(f"{name}/file:/etc/etcd/pki/ca.pem") < order.index(f"{name}/restart")


def test_trust_phase_resumes_after_the_members_already_done() -> None:
    state = RotationState("trust-new", "a", "b", "t", restarted=("etcd2", "etcd3"))
    steps = rplan.trust_phase_steps(SPEC, WS, state, trusted_pem=b"NEW", leader="etcd1", timeout=60)
    assert [s.action.member for s in steps if isinstance(s.action, RestartMember)] == ["etcd1"]
    assert [s.action.to for s in steps if isinstance(s.action, MoveLeader)] == ["etcd2"]
    done = RotationState("trust-new", "a", "b", "t", restarted=("etcd1", "etcd2", "etcd3"))
    rest = rplan.trust_phase_steps(SPEC, WS, done, trusted_pem=b"NEW", leader="etcd1", timeout=60)
    assert [s.id for s in rest] == ["cluster/healthy", "workspace/trust"]


def test_trust_phase_is_the_same_plan_in_both_modes_but_for_where_the_file_lives() -> None:
    local = SPEC.model_copy(update={"mode": "local"})
    state = RotationState("trust-both", "a", "b", "t")
    on_hosts = rplan.trust_phase_steps(SPEC, WS, state, trusted_pem=b"B", leader="etcd3", timeout=60)
    here = rplan.trust_phase_steps(local, WS, state, trusted_pem=b"B", leader="etcd3", timeout=60)
    kinds = [(type(s.action).__name__, s.host) for s in here]
    assert kinds == [(type(s.action).__name__, s.host) for s in on_hosts]
    assert [s.id.split("/")[1] for s in here if isinstance(s.action, RestartMember)] == ["restart"] * 3
    puts = [s.action for s in here if isinstance(s.action, PutFile)]
    # local members read their CA from their own directory in the workspace, as this user
    assert [(p.host, p.path, p.owner, p.content) for p in puts] == [
        (n, WS.member_paths(n).ca_cert, None, b"B") for n in ("etcd1", "etcd2", "etcd3")
    ]


def test_swap_ca_writes_the_key_first_and_nothing_when_already_swapped() -> None:
    steps = rplan.swap_ca_steps(WS, b"NEWCERT", b"NEWKEY", b"OLDCERT")
    assert [(s.action.path, s.action.mode, s.action.secret) for s in steps] == [  # type: ignore[union-attr]
        ("/ws/pki/ca-key.pem", 0o600, True),
        ("/ws/pki/ca.pem", 0o644, False),
    ]
    assert rplan.swap_ca_steps(WS, b"NEWCERT", b"NEWKEY", b"NEWCERT") == []


def test_leaves_signed_by_the_old_ca_are_reissued_once_the_new_ca_signs(tmp_path: Path) -> None:
    ca = certs.ca_settings(SPEC)
    requests = certs.cert_requests(SPEC)
    apply_pki(tmp_path, plan_pki(ca, requests, observe_pki(tmp_path, None), NOW), NOW)
    new = create_ca(ca, NOW)
    (tmp_path / "ca-key.pem").write_bytes(new.key_pem())
    (tmp_path / "ca.pem").write_bytes(new.cert_pem())
    plan = plan_pki(ca, requests, observe_pki(tmp_path, None), NOW)
    assert {s.name for s in plan.changes} == {r.name for r in requests}
    assert all(s.reason == "not signed by the current CA" and s.reuse_key for s in plan.changes)
    leaf = issue(new, requests[0], NOW)
    assert leaf.cert.issuer == new.cert.subject


def test_leadership_goes_only_to_a_restarted_member_that_is_healthy_now() -> None:
    state = RotationState("trust-new", "a", "b", "t", restarted=("etcd2", "etcd3"))
    steps = rplan.trust_phase_steps(
        SPEC, WS, state, trusted_pem=b"N", leader="etcd1", timeout=60,
        healthy=frozenset({"etcd1", "etcd3"}),
    )  # fmt: skip
    assert [s.action.to for s in steps if isinstance(s.action, MoveLeader)] == ["etcd3"]


def _workspace_with_record(tmp_path: Path, state: RotationState) -> Workspace:
    from etcdforge.fsutil import atomic_write
    from etcdforge.spec import dump_spec, parse_spec

    spec = parse_spec({"name": "t", "token": "tok", "mode": "local",
                       "members": [{"name": "etcd1", "address": "127.0.0.2"}]})  # fmt: skip
    ws = Workspace(tmp_path)
    atomic_write(ws.spec_path, dump_spec(spec).encode())
    ws.rotation_dir.mkdir(parents=True)
    atomic_write(ws.rotation_dir / "state.json", state.to_json(), 0o600)
    return ws


def test_stop_after_a_phase_already_done_does_nothing(tmp_path: Path) -> None:
    """Re-running `rotate-ca --stop-after trust-both` later must not run the phases after it."""
    import asyncio

    from etcdforge.verbs.rotate_ca.run import rotate_ca

    ws = _workspace_with_record(tmp_path, RotationState("trust-new", "a", "b", "t"))
    before = (ws.rotation_dir / "state.json").read_bytes()
    result = asyncio.run(rotate_ca(tmp_path, stop_after="reissue"))
    assert result.runs == () and "already past reissue" in result.note
    assert result.state is not None and result.state.phase == "trust-new"
    assert (ws.rotation_dir / "state.json").read_bytes() == before


def test_a_run_killed_while_cleaning_up_a_finished_rotation_only_cleans_up(tmp_path: Path) -> None:
    import asyncio

    from etcdforge.pki.rotation import FINISHED_DIR
    from etcdforge.verbs.rotate_ca.run import rotate_ca

    ws = _workspace_with_record(tmp_path, RotationState("finish", "a", "b", "t"))
    ws.rotation_dir.rename(ws.pki_dir / FINISHED_DIR)  # the rename that ends a rotation happened
    dry = asyncio.run(rotate_ca(tmp_path, dry_run=True))
    assert (ws.pki_dir / FINISHED_DIR).exists() and "had finished" in dry.note
    result = asyncio.run(rotate_ca(tmp_path))
    assert result.runs == () and result.state is None and "had finished" in result.note
    assert not (ws.pki_dir / FINISHED_DIR).exists() and not ws.rotation_dir.exists()


def test_a_stale_trust_bundle_is_ignored(tmp_path: Path) -> None:
    """pki/trust.pem that does not hold the current CA (the CA was replaced some other way) is ignored,
    so members are never sent a trust file that does not trust their own certificates."""
    ws = Workspace(tmp_path)
    ws.pki_dir.mkdir()
    old, new = create_ca(certs.ca_settings(SPEC), NOW), create_ca(certs.ca_settings(SPEC), NOW)
    ws.ca_cert.write_bytes(new.cert_pem())
    assert ws.trusted_ca == ws.ca_cert
    ws.trust_bundle.write_bytes(old.cert_pem())
    assert ws.trusted_ca == ws.ca_cert
    ws.trust_bundle.write_bytes(old.cert_pem() + new.cert_pem())
    assert ws.trusted_ca == ws.trust_bundle
