"""`pki import-cfssl`: recognising and validating the guide's cfssl PKI (pure), and writing it (tmp_path)."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import GUIDE_CA_CONFIG, GUIDE_CA_CSR, run_cli

from etcdforge import certs
from etcdforge.errors import PkiError
from etcdforge.executor import execute
from etcdforge.pki import CaSettings, CertRequest, KeyPair, KeySpec, Profile, SubjectNames, create_ca, issue
from etcdforge.pki.import_cfssl import analyze
from etcdforge.pki.keys import parse_cert, parse_key
from etcdforge.plan import Plan
from etcdforge.runtime.control import ControlFiles
from etcdforge.spec import load_spec
from etcdforge.verbs.pki_import import import_steps

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RSA = KeySpec("rsa", 2048)
NAMES = SubjectNames(C="CN", ST="ShangHai", L="ShangHai", O="ETCD")
IPS = ("127.0.0.1", "192.168.10.80", "192.168.10.81", "192.168.10.82")
SERVER_CSR = {"CN": "etcd-server", "hosts": list(IPS), "key": {"algo": "rsa", "size": 2048},
              "names": [{"C": "CN", "ST": "ShangHai", "L": "ShangHai", "O": "ETCD"}]}  # fmt: skip
BOTH = ("signing", "key encipherment", "server auth", "client auth")
CLIENT = ("signing", "key encipherment", "client auth")


def ca(cn: str = "ETCD CA") -> KeyPair:
    return create_ca(CaSettings(cn=cn, subject=SubjectNames(C="CN", O="CA"), key=RSA), NOW)


def leaf(
    authority: KeyPair, name: str, profile: Profile, usages: tuple[str, ...], ips: tuple[str, ...] = IPS
) -> KeyPair:
    req = CertRequest(name=name, cn=name, profile=profile, ip_sans=ips, key=RSA, subject=NAMES, usages=usages)
    return issue(authority, req, NOW)


def pair(prefix: str, kp: KeyPair) -> dict[str, bytes]:
    return {f"{prefix}.pem": kp.cert_pem(), f"{prefix}-key.pem": kp.key_pem()}


def guide_dir(authority: KeyPair | None = None) -> dict[str, bytes]:
    """/etc/etcd/pki on the guide's first node, plus its csr/ JSON."""
    authority = authority or ca()
    return {
        **pair("etcd-ca", authority),
        "etcd-ca-config.json": json.dumps(GUIDE_CA_CONFIG).encode(),
        "etcd-ca-csr.json": json.dumps(GUIDE_CA_CSR).encode(),
        "etcd-server-csr.json": json.dumps(SERVER_CSR).encode(),
        **pair("etcd-server", leaf(authority, "etcd-server", "server", BOTH)),
        **pair("etcd-member", leaf(authority, "etcd", "peer", BOTH)),
        **pair("etcd-client", leaf(authority, "etcd-client", "client", CLIENT, ())),
    }


def test_the_guides_directory_is_recognised_and_valid() -> None:
    imp = analyze(guide_dir(), NOW)
    assert imp.ca_file == "etcd-ca.pem"
    assert (imp.ca_config, imp.ca_csr, imp.leaf_csr) == (
        "etcd-ca-config.json", "etcd-ca-csr.json", "etcd-server-csr.json",
    )  # fmt: skip
    assert dict(imp.profiles) == {"server": "etcd", "peer": "etcd", "client": "client"}
    assert imp.cfssl_settings() == {
        "ca_config": "pki/cfssl/etcd-ca-config.json",
        "ca_csr": "pki/cfssl/etcd-ca-csr.json",
        "csr": "pki/cfssl/etcd-server-csr.json",
        "server_profile": "etcd",
        "peer_profile": "etcd",
        "client_profile": "client",
    }
    assert [(lf.file, lf.role, lf.problems) for lf in imp.leaves] == [
        ("etcd-client.pem", "client", ()),
        ("etcd-member.pem", "peer", ()),
        ("etcd-server.pem", "server", ()),
    ]
    report = "\n".join(imp.report())
    assert "pki/ca.pem" in report and "not reused" in report and "one server and one peer" in report
    assert not imp.warnings


def _server_without_client_auth() -> dict[str, bytes]:
    files = guide_dir()
    authority = KeyPair(cert=parse_cert(files["etcd-ca.pem"]), key=parse_key(files["etcd-ca-key.pem"]))
    only_server = ("signing", "key encipherment", "server auth")
    return {**files, **pair("etcd-server", leaf(authority, "etcd-server", "server", only_server))}


def _leaf_from_another_ca() -> dict[str, bytes]:
    return {**guide_dir(), **pair("etcd-peer-192.168.10.100", leaf(ca("other"), "etcd", "peer", BOTH))}


def _mismatched_leaf_key() -> dict[str, bytes]:
    files = guide_dir()
    return {**files, "etcd-member-key.pem": files["etcd-server-key.pem"]}


@pytest.mark.parametrize(
    ("make", "leaf_file", "problem"),
    [
        (_server_without_client_auth, "etcd-server.pem", "lacks client auth (etcd's gRPC gateway"),
        (_leaf_from_another_ca, "etcd-peer-192.168.10.100.pem", "not signed by this CA"),
        (_mismatched_leaf_key, "etcd-member.pem", "etcd-member-key.pem does not match it"),
    ],
)
def test_leaf_problems_are_reported_not_fatal(make: object, leaf_file: str, problem: str) -> None:
    imp = analyze(make(), NOW)  # type: ignore[operator]
    found = {lf.file: lf.problems for lf in imp.leaves}
    assert any(p.startswith(problem) for p in found[leaf_file]), found


def _without_ca_key() -> dict[str, bytes]:
    files = guide_dir()
    del files["etcd-ca-key.pem"]
    return files


def _wrong_ca_key() -> dict[str, bytes]:
    return {**guide_dir(), "etcd-ca-key.pem": ca().key_pem()}


def _leaf_as_ca() -> dict[str, bytes]:
    files = guide_dir()
    return {**files, "etcd-ca.pem": files["etcd-server.pem"], "etcd-ca-key.pem": files["etcd-server-key.pem"]}


def _no_fitting_profile() -> dict[str, bytes]:
    config = {"signing": {"default": {"expiry": "8760h"}, "profiles": {
        "client": {"expiry": "8760h", "usages": ["signing", "client auth"]}}}}  # fmt: skip
    return {**guide_dir(), "etcd-ca-config.json": json.dumps(config).encode()}


def _expired_ca() -> dict[str, bytes]:
    old = create_ca(CaSettings(cn="old", key=RSA, expiry=timedelta(hours=1)), NOW - timedelta(days=2))
    return pair("etcd-ca", old)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: {}, "no CA certificate"),
        (_without_ca_key, "its key etcd-ca-key.pem is not"),
        (_wrong_ca_key, "is not the key of etcd-ca.pem"),
        (_leaf_as_ca, "is not a CA certificate"),
        (_no_fitting_profile, "no profile gives a server certificate"),
        (_expired_ca, "expired on"),
        (lambda: {**guide_dir(), "etcd-ca-config.json": b"{"}, "malformed JSON"),
    ],
)
def test_unusable_directories_are_refused_with_one_line(make: object, message: str) -> None:
    with pytest.raises(PkiError) as err:
        analyze(make(), NOW)  # type: ignore[operator]
    assert message in str(err.value)


def test_without_json_new_leaves_keep_the_guides_key_type_and_names() -> None:
    files = {n: b for n, b in guide_dir().items() if not n.endswith(".json")}
    imp = analyze(files, NOW)
    assert imp.cfssl_settings() == {}
    assert imp.leaf_key == RSA
    assert imp.leaf_subject == NAMES


def test_import_steps_put_the_ca_in_the_workspace_once_and_refuse_another(tmp_path: Path) -> None:
    imp = analyze(guide_dir(), NOW)
    steps = import_steps(tmp_path, imp)
    pki = tmp_path / "pki"
    # the key first (a CA certificate without its key is refused by `plan`), secret in the plan
    assert [s.id for s in steps[:2]] == ["pki/ca-key", "pki/ca"]
    assert steps[0].to_json()["sha256"] == "(secret)"
    asyncio.run(execute(Plan("pki-import", tuple(steps)), ControlFiles()))
    assert (pki / "ca-key.pem").read_bytes() == imp.ca_key_pem
    assert stat.S_IMODE((pki / "ca-key.pem").stat().st_mode) == 0o600
    assert (pki / "cfssl" / "etcd-ca-config.json").is_file()
    assert import_steps(tmp_path, imp) == []  # idempotent
    with pytest.raises(PkiError, match="already holds a different CA"):
        import_steps(tmp_path, analyze(guide_dir(ca("another")), NOW))
    assert (pki / "ca-key.pem").read_bytes() == imp.ca_key_pem


def test_cli_import_points_the_spec_at_the_imported_files(tmp_path: Path) -> None:
    src = tmp_path / "etc-etcd-pki"
    src.mkdir()
    for name, data in guide_dir().items():
        (src / name).write_bytes(data)
    ws = tmp_path / "ws"
    run_cli("init", "--dir", str(ws), "--member", "etcd1=192.168.10.80", "--member", "etcd2=192.168.10.81",
            "--member", "etcd3=192.168.10.82")  # fmt: skip
    out = run_cli("pki", "import-cfssl", str(src), "--dir", str(ws)).stdout
    assert "etcd-ca.pem" in out and "updated" in out
    spec = load_spec(ws / "cluster.yaml")
    assert spec.pki.cfssl is not None and spec.pki.cfssl.ca_config == "pki/cfssl/etcd-ca-config.json"
    requests = {r.name: r for r in certs.cert_requests(spec, base_dir=ws)}
    # the guide's key type and names (from its server CSR) and its `etcd` profile's usages
    server = requests["etcd1-server"]
    assert server.key == RSA and server.subject.O == "ETCD"
    assert set(server.effective_usages) == set(BOTH)
    assert requests["admin-client"].effective_usages == CLIENT
    # a second import of the same CA is a no-op; a different CA is refused with one line
    run_cli("pki", "import-cfssl", str(src), "--dir", str(ws))
    other = tmp_path / "other"
    other.mkdir()
    for name, data in guide_dir(ca("another")).items():
        (other / name).write_bytes(data)
    refused = run_cli("pki", "import-cfssl", str(other), "--dir", str(ws), check=False)
    assert refused.returncode != 0 and "different CA" in refused.stderr and "Traceback" not in refused.stderr


def test_a_peers_ca_beside_the_ca_is_imported_and_judges_the_peer_leaves(tmp_path: Path) -> None:
    """``peer-ca.pem`` (what `pki export-cfssl` names the peers' CA) is found beside the CA, checked like
    it, and imported as pki/peer-ca.pem; peer leaves are judged against it, not the CA."""
    main, peers = ca(), ca("ETCD peers")
    files = guide_dir(main)
    files.update(pair("peer-ca", peers))
    files.update(pair("etcd-member", leaf(peers, "etcd", "peer", BOTH)))
    imp = analyze(files, NOW)
    assert imp.ca_file == "etcd-ca.pem"
    assert imp.peer_ca is not None and imp.peer_ca[0] == "peer-ca.pem"
    member = next(lf for lf in imp.leaves if lf.file == "etcd-member.pem")
    assert member.problems == ()
    assert any("peers' CA: peer-ca.pem" in line for line in imp.report())
    steps = import_steps(tmp_path, imp)
    asyncio.run(execute(Plan("pki-import", tuple(steps)), ControlFiles()))
    assert (tmp_path / "pki" / "peer-ca.pem").read_bytes() == peers.cert_pem()
    assert stat.S_IMODE((tmp_path / "pki" / "peer-ca-key.pem").stat().st_mode) == 0o600
    assert import_steps(tmp_path, imp) == []  # again: nothing to write
    # a peers' CA whose key is not its own, or that is the CA itself, is refused
    broken = {**files, "peer-ca-key.pem": main.key_pem()}
    with pytest.raises(PkiError, match=r"not the key of peer-ca\.pem"):
        analyze(broken, NOW)
    same = {**files, **pair("peer-ca", main)}
    with pytest.raises(PkiError, match="the peers' CA must be a CA of its own"):
        analyze(same, NOW)


def test_without_a_peers_ca_the_report_says_how_to_get_one() -> None:
    imp = analyze(guide_dir(), NOW)
    assert imp.peer_ca is None
    assert any("pki rotate-ca --peer" in line for line in imp.report())
