"""observe -> plan -> apply: reasons, CA safety, file modes, idempotency, external CA."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etcdforge.errors import PkiError
from etcdforge.pki import (
    CaSettings,
    CertRequest,
    ExternalCa,
    KeyPair,
    KeySpec,
    ObservedPair,
    apply_pki,
    create_ca,
    issue,
    load_cert,
    needs_reissue,
    observe_pki,
    plan_pki,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CA = CaSettings("etcd CA")
REQS = (
    CertRequest("etcd1-server", "etcd1", "server", ("127.0.0.1", "10.0.0.1"), ("localhost",)),
    CertRequest("etcd1-peer", "etcd1", "peer", ("10.0.0.1",)),
    CertRequest("client", "root", "client"),
)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return create_ca(CA, NOW)


@pytest.fixture(scope="module")
def good(ca: KeyPair) -> KeyPair:
    return issue(ca, REQS[1], NOW)


def test_needs_reissue_reasons(ca: KeyPair, good: KeyPair) -> None:
    req = REQS[1]
    other_ca = create_ca(CA, NOW)
    p = Path("x")
    cases: list[tuple[object, CertRequest, str | None]] = [
        (None, req, "missing"),
        (ObservedPair("x", p, p), req, "missing"),
        (ObservedPair("x", p, p, good.cert, None, None, "missing"), req, "key missing"),
        (ObservedPair("x", p, p, None, None, "unreadable: junk", None), req, "certificate unreadable: junk"),
        (KeyPair(good.cert, ca.key), req, "key does not match certificate"),
        (issue(other_ca, req, NOW), req, "not signed by the current CA"),
        (good, replace(req, ip_sans=("10.0.0.1", "127.0.0.4")), "SANs differ: +127.0.0.4"),
        (good, replace(req, ip_sans=()), "SANs differ: -10.0.0.1"),
        (good, replace(req, usages=("signing", "client auth")), "usages differ: key usage -server auth"),
        (good, replace(req, key=KeySpec("ecdsa", 384)), "key algorithm differs: ecdsa-256, want ecdsa-384"),
        (good, replace(req, cn="etcd2"), "subject differs: 'CN=etcd1', want 'CN=etcd2'"),
        (good, req, None),
    ]
    for existing, r, reason in cases:
        assert needs_reissue(existing, r, ca.cert, NOW, timedelta(days=30)) == reason  # type: ignore[arg-type]
    soon = NOW + timedelta(hours=8760) - timedelta(days=12, hours=1)
    assert needs_reissue(good, req, ca.cert, soon, timedelta(days=30)) == "expires in 12 days"
    late = NOW + timedelta(days=400)
    assert needs_reissue(good, req, ca.cert, late, timedelta(days=30)) == "expired on 2027-11-28"
    assert needs_reissue(good, req, None, NOW) == "not signed by the current CA"


def test_plan_apply_idempotent(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    plan = plan_pki(CA, REQS, observe_pki(pki), NOW)
    assert [(s.action, s.name, s.reason) for s in plan.steps] == [
        ("create-ca", "ca", "missing"),
        ("issue", "etcd1-server", "missing"),
        ("issue", "etcd1-peer", "missing"),
        ("issue", "client", "missing"),
    ]
    events = apply_pki(pki, plan, NOW)
    assert len(events) == 4
    names = sorted(p.name for p in pki.iterdir())
    assert names == sorted(
        [
            "ca.pem",
            "ca-key.pem",
            "etcd1-server.pem",
            "etcd1-server-key.pem",
            "etcd1-peer.pem",
            "etcd1-peer-key.pem",
            "client.pem",
            "client-key.pem",
        ]
    )
    for p in pki.iterdir():
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o600 if p.name.endswith("-key.pem") else 0o644), p.name
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    before = {p.name: p.read_bytes() for p in pki.iterdir()}

    later = NOW + timedelta(days=1)
    again = plan_pki(CA, REQS, observe_pki(pki), later)
    assert [s.action for s in again.steps] == ["keep"] * 4
    assert all(s.reason.startswith("valid") for s in again.steps)
    apply_pki(pki, again, later)
    assert {p.name: p.read_bytes() for p in pki.iterdir()} == before


def test_adding_a_member_touches_only_its_certs(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    apply_pki(pki, plan_pki(CA, REQS, observe_pki(pki), NOW), NOW)
    more = (*REQS, CertRequest("etcd2-peer", "etcd2", "peer", ("10.0.0.2",)))
    plan = plan_pki(CA, more, observe_pki(pki), NOW)
    assert [(s.action, s.name) for s in plan.changes] == [("issue", "etcd2-peer")]


def test_reissue_on_san_change_keeps_key(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    apply_pki(pki, plan_pki(CA, REQS, observe_pki(pki), NOW), NOW)
    key_before = (pki / "etcd1-peer-key.pem").read_bytes()
    changed = (REQS[0], replace(REQS[1], ip_sans=("10.0.0.1", "127.0.0.1")), REQS[2])
    plan = plan_pki(CA, changed, observe_pki(pki), NOW)
    (step,) = plan.changes
    assert (step.action, step.reason, step.reuse_key) == ("reissue", "SANs differ: +127.0.0.1", True)
    events = apply_pki(pki, plan, NOW)
    assert [e.paths for e in events if e.action == "reissue"] == [(pki / "etcd1-peer.pem",)]
    assert (pki / "etcd1-peer-key.pem").read_bytes() == key_before
    assert plan_pki(CA, changed, observe_pki(pki), NOW).changes == ()


def test_garbled_leaf_is_reissued(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    apply_pki(pki, plan_pki(CA, REQS, observe_pki(pki), NOW), NOW)
    (pki / "client.pem").write_bytes(b"garbage")
    (step,) = plan_pki(CA, REQS, observe_pki(pki), NOW).changes
    assert step.name == "client" and step.reason.startswith("certificate unreadable")


def test_existing_ca_never_replaced(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    apply_pki(pki, plan_pki(CA, REQS, observe_pki(pki), NOW), NOW)
    (pki / "ca-key.pem").unlink()
    with pytest.raises(PkiError, match=r"ca-key\.pem is missing"):
        plan_pki(CA, REQS, observe_pki(pki), NOW)
    (pki / "ca-key.pem").write_bytes(create_ca(CA, NOW).key_pem())
    with pytest.raises(PkiError, match="does not match"):
        plan_pki(CA, REQS, observe_pki(pki), NOW)
    (pki / "ca.pem").write_bytes(b"junk")
    with pytest.raises(PkiError, match="never replaces a CA"):
        plan_pki(CA, REQS, observe_pki(pki), NOW)


def test_interrupted_first_run_converges(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    apply_pki(pki, plan_pki(CA, REQS, observe_pki(pki), NOW), NOW)
    key = (pki / "ca-key.pem").read_bytes()
    for p in pki.iterdir():
        if p.name != "ca-key.pem":
            p.unlink()
    plan = plan_pki(CA, REQS, observe_pki(pki), NOW)
    assert plan.steps[0].action == "create-ca" and plan.steps[0].reuse_key
    apply_pki(pki, plan, NOW)
    assert (pki / "ca-key.pem").read_bytes() == key
    assert plan_pki(CA, REQS, observe_pki(pki), NOW).changes == ()


def test_duplicate_names_refused(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="used twice"):
        plan_pki(CA, (REQS[0], REQS[0]), observe_pki(tmp_path), NOW)


def test_external_ca(tmp_path: Path) -> None:
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    ext_ca = create_ca(CaSettings("ETCD CA", key=KeySpec("rsa", 2048)), NOW)
    (ext_dir / "etcd-ca.pem").write_bytes(ext_ca.cert_pem())
    (ext_dir / "etcd-ca-key.pem").write_bytes(ext_ca.key_pem())
    ext = ExternalCa(ext_dir / "etcd-ca.pem", ext_dir / "etcd-ca-key.pem")
    pki = tmp_path / "pki"
    with pytest.raises(PkiError, match="different CA"):
        plan_pki(CA, REQS, observe_pki(pki), NOW, external_ca=ext)
    plan = plan_pki(CA, REQS, observe_pki(pki, ext), NOW, external_ca=ext)
    assert plan.steps[0].action == "install-ca-cert"
    apply_pki(pki, plan, NOW)
    assert not (pki / "ca-key.pem").exists()  # the CA key stays where it is
    assert load_cert(pki / "ca.pem") == ext_ca.cert
    load_cert(pki / "etcd1-peer.pem").verify_directly_issued_by(ext_ca.cert)
    assert plan_pki(CA, REQS, observe_pki(pki, ext), NOW, external_ca=ext).changes == ()
    # a different ca.pem already in the PKI directory is never overwritten
    (pki / "ca.pem").write_bytes(create_ca(CA, NOW).cert_pem())
    with pytest.raises(PkiError, match="is a different CA"):
        plan_pki(CA, REQS, observe_pki(pki, ext), NOW, external_ca=ext)


def test_ca_expiry_warning(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    short = CaSettings("etcd CA", expiry=timedelta(days=10))
    apply_pki(pki, plan_pki(short, (), observe_pki(pki), NOW), NOW)
    plan = plan_pki(short, (), observe_pki(pki), NOW)
    assert plan.changes == ()
    assert any("plan a CA rotation" in w for w in plan.warnings)


def _spec_ws(root: Path) -> tuple[object, object]:
    from etcdforge.spec import dump_spec, parse_spec
    from etcdforge.workspace import Workspace

    spec = parse_spec({"name": "t", "token": "tok", "mode": "local",
                       "members": [{"name": "etcd1", "address": "127.0.0.2"}]})  # fmt: skip
    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster.yaml").write_text(dump_spec(spec))
    return spec, ws


def test_a_new_workspace_gets_a_peers_ca_that_signs_only_peer_certificates(tmp_path: Path) -> None:
    from etcdforge.pki import load_cert
    from etcdforge.pki.plan import signed_by
    from etcdforge.workspace_pki import plan_workspace_pki

    spec, ws = _spec_ws(tmp_path)
    assert ws.separate_peers  # nothing yet: a new workspace keeps peers apart
    now = datetime.now(UTC)
    plan = plan_workspace_pki(spec, ws, now=now)  # type: ignore[arg-type]
    assert plan.peer is not None
    assert [(s.action, s.name) for s in plan.peer.steps] == [
        ("create-ca", "peer-ca"),
        ("issue", "etcd1-peer"),
    ]
    assert {s.name for s in plan.steps} == {"ca", "etcd1-server", "admin-client"}
    assert plan.all_steps[0].name == "peer-ca"  # the peers' CA is made first
    apply_pki(ws.pki_dir, plan, now)
    peer_ca, main = load_cert(ws.peer_ca_cert), load_cert(ws.ca_cert)
    assert signed_by(load_cert(ws.cert_path("etcd1-peer")), peer_ca)
    assert not signed_by(load_cert(ws.cert_path("etcd1-peer")), main)
    assert signed_by(load_cert(ws.cert_path("etcd1-server")), main)
    assert ws.peer_trusted_ca == ws.peer_ca_cert and ws.trusted_source("peer-ca.pem") == ws.peer_ca_cert
    assert plan_workspace_pki(spec, ws, now=now).changes == ()  # type: ignore[arg-type]


def test_a_workspace_made_before_the_peers_ca_keeps_one_ca_until_it_migrates(tmp_path: Path) -> None:
    from etcdforge.fsutil import atomic_write
    from etcdforge.workspace_pki import plan_workspace_pki

    spec, ws = _spec_ws(tmp_path)
    old = create_ca(CaSettings("etcdforge CA"), datetime.now(UTC))
    atomic_write(ws.pki_dir / "ca-key.pem", old.key_pem(), 0o600)
    atomic_write(ws.ca_cert, old.cert_pem(), 0o644)
    assert not ws.separate_peers
    plan = plan_workspace_pki(spec, ws)  # type: ignore[arg-type]
    assert plan.peer is None and "etcd1-peer" in {s.name for s in plan.steps}
    assert ws.peer_trusted_ca == ws.trusted_ca == ws.ca_cert
    # an interrupted first run that wrote only the peers' CA key still finishes that CA
    atomic_write(ws.pki_dir / "peer-ca-key.pem", old.key_pem(), 0o600)
    assert ws.separate_peers
    plan = plan_workspace_pki(spec, ws)  # type: ignore[arg-type]
    assert plan.peer is not None and plan.peer.steps[0].reuse_key and plan.peer.steps[0].action == "create-ca"


def test_the_rotation_record_names_its_target(tmp_path: Path) -> None:
    from etcdforge.pki.rotation import RotationState

    state = RotationState("trust-both", "a", "b", "now", target="peer")
    assert RotationState.from_json(state.to_json(), "x") == state
    legacy = b'{"phase": "reissue", "old_ca_sha256": "a", "new_ca_sha256": "b", "started": "t"}'
    assert RotationState.from_json(legacy, "x").target == "ca"  # a record written before --peer
    with pytest.raises(PkiError, match="unknown target"):
        RotationState.from_json(legacy.replace(b"}", b', "target": "x"}'), "x")
