"""``pki check``: broken PKIs built in tmp with the real issuance code, each flagged precisely."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from etcdforge import certs
from etcdforge.fsutil import atomic_write
from etcdforge.pki import CaSettings, CertRequest, KeyPair, create_ca, issue, key_pem
from etcdforge.pki.check import (
    FileFacts,
    Finding,
    PkiFacts,
    Thresholds,
    check_key_file,
    check_pki,
    exit_code,
)
from etcdforge.spec import dump_spec, parse_spec
from etcdforge.verbs.pki_check import gather_local
from etcdforge.workspace import Workspace

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SPEC = parse_spec(
    {"name": "t", "token": "tok", "mode": "local", "members": [{"name": "etcd1", "address": "127.0.0.2"}]}
)


def _write_pair(directory: Path, stem: str, pair: KeyPair, key_mode: int = 0o600) -> None:
    atomic_write(directory / f"{stem}.pem", pair.cert_pem(), 0o644)
    atomic_write(directory / f"{stem}-key.pem", pair.key_pem(), key_mode)


class Pki:
    """A one-member local workspace with its PKI and the member's installed copies."""

    def __init__(self, root: Path, *, separate_peers: bool = True) -> None:
        self.ws = Workspace(root)
        atomic_write(self.ws.spec_path, dump_spec(SPEC).encode())
        self.ca = create_ca(CaSettings("etcdforge CA"), NOW - timedelta(days=10))
        self.peer_ca = create_ca(CaSettings("etcdforge CA (peers)"), NOW - timedelta(days=10))
        if not separate_peers:
            self.peer_ca = self.ca
        self.requests = {r.name: r for r in certs.cert_requests(SPEC, base_dir=root)}
        _write_pair(self.ws.pki_dir, "ca", self.ca)
        if separate_peers:
            _write_pair(self.ws.pki_dir, "peer-ca", self.peer_ca)
        self.pairs = {
            name: issue(self.peer_ca if req.profile == "peer" else self.ca, req, NOW - timedelta(days=1))
            for name, req in self.requests.items()
        }
        for name, pair in self.pairs.items():
            _write_pair(self.ws.pki_dir, name, pair)
        self.install()

    def install(self) -> None:
        p = self.ws.member_paths("etcd1")
        atomic_write(Path(p.ca_cert), self.ca.cert_pem(), 0o644)
        atomic_write(Path(p.peer_ca_cert), self.peer_ca.cert_pem(), 0o644)
        for role, cert, key in (("server", p.server_cert, p.server_key), ("peer", p.peer_cert, p.peer_key)):
            pair = self.pairs[f"etcd1-{role}"]
            atomic_write(Path(cert), pair.cert_pem(), 0o644)
            atomic_write(Path(key), pair.key_pem(), 0o600)

    def reissue(
        self, name: str, *, ca: KeyPair | None = None, now: datetime = NOW, **changes: object
    ) -> None:
        from dataclasses import replace

        req = replace(self.requests[name], **changes)  # type: ignore[arg-type]
        signer = ca or (self.peer_ca if req.profile == "peer" else self.ca)
        _write_pair(self.ws.pki_dir, name, issue(signer, req, now))

    def findings(self, thresholds: Thresholds | None = None) -> tuple[Finding, ...]:
        return check_pki(gather_local(SPEC, self.ws), NOW, thresholds or Thresholds())


def _not_ok(findings: tuple[Finding, ...]) -> set[tuple[str, str, str]]:
    return {(f.subject, f.check, f.severity) for f in findings if f.severity != "ok"}


def test_all_good(tmp_path: Path) -> None:
    findings = Pki(tmp_path).findings()
    assert _not_ok(findings) == set()
    assert exit_code(findings) == 0
    checks = {(f.subject, f.check) for f in findings}
    for subject in ("etcd1-server", "etcd1:server"):
        for check in ("expiry", "chain", "key-match", "usages", "sans", "key-mode", "owner"):
            assert (subject, check) in checks
    assert ("etcd1", "ca-key-absent") in checks
    assert ("etcd1:ca", "chain") in checks
    assert ("etcd1:peer-ca", "chain") in checks
    assert ("peers", "peer-trust", "ok") in {(f.subject, f.check, f.severity) for f in findings}


def test_peers_without_a_ca_of_their_own_are_a_warning(tmp_path: Path) -> None:
    findings = Pki(tmp_path, separate_peers=False).findings()
    assert _not_ok(findings) == {("peers", "peer-trust", "warning")}
    (warning,) = [f for f in findings if f.check == "peer-trust"]
    assert "pki rotate-ca --peer" in warning.message


def test_a_peer_certificate_signed_by_the_ca_is_broken_when_peers_have_their_own(tmp_path: Path) -> None:
    p = Pki(tmp_path)
    p.reissue("etcd1-peer", ca=p.ca)
    assert ("etcd1-peer", "chain", "broken") in _not_ok(p.findings())
    # and the peers' CA key copied to a member is found like the CA key
    atomic_write(p.ws.member_dir("etcd1") / "pki" / "stray.pem", p.peer_ca.key_pem(), 0o600)
    assert ("etcd1", "ca-key-absent", "broken") in _not_ok(p.findings())


def _expired(p: Pki) -> None:
    p.reissue("etcd1-server", now=NOW - timedelta(days=400))


def _not_yet_valid(p: Pki) -> None:
    p.reissue("etcd1-server", now=NOW + timedelta(days=3))


def _wrong_ca(p: Pki) -> None:
    p.reissue("etcd1-peer", ca=create_ca(CaSettings("etcdforge CA"), NOW))


def _other_ca_name(p: Pki) -> None:
    p.reissue("etcd1-peer", ca=create_ca(CaSettings("someone else"), NOW))


def _no_client_auth(p: Pki) -> None:
    p.reissue("etcd1-server", usages=("signing", "key encipherment", "server auth"))


def _client_no_client_auth(p: Pki) -> None:
    p.reissue("admin-client", usages=("signing", "key encipherment", "server auth"))


def _san_missing(p: Pki) -> None:
    p.reissue("etcd1-peer", ip_sans=("127.0.0.1",))


def _key_mismatch(p: Pki) -> None:
    other = issue(p.ca, p.requests["admin-client"], NOW)
    atomic_write(p.ws.key_path("admin-client"), other.key_pem(), 0o600)


def _key_0644(p: Pki) -> None:
    os.chmod(p.ws.member_paths("etcd1").server_key, 0o644)


def _key_0640(p: Pki) -> None:
    os.chmod(p.ws.key_path("etcd1-peer"), 0o640)


def _ca_key_in_member(p: Pki) -> None:
    atomic_write(p.ws.member_pki_dir("etcd1") / "ca-key.pem", p.ca.key_pem(), 0o600)


def _ca_key_renamed(p: Pki) -> None:
    atomic_write(p.ws.member_dir("etcd1") / "backup.bin", p.ca.key_pem(), 0o600)


def _ca_key_pkcs8(p: Pki) -> None:
    pkcs8 = p.ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(p.ws.member_pki_dir("etcd1") / "old.pem", pkcs8, 0o600)


def _installed_ca_differs(p: Pki) -> None:
    other = create_ca(CaSettings("etcdforge CA"), NOW)
    atomic_write(Path(p.ws.member_paths("etcd1").ca_cert), other.cert_pem(), 0o644)


def _expiring(p: Pki) -> None:
    p.reissue("etcd1-server", now=NOW - timedelta(days=350))


def _missing_cert(p: Pki) -> None:
    Path(p.ws.member_paths("etcd1").peer_cert).unlink()


def _garbled_key(p: Pki) -> None:
    atomic_write(p.ws.key_path("etcd1-server"), b"not a key\n", 0o600)


CASES: list[tuple[str, Callable[[Pki], None], set[tuple[str, str, str]], int]] = [
    ("expired", _expired, {("etcd1-server", "expiry", "broken")}, 2),
    ("not-yet-valid", _not_yet_valid, {("etcd1-server", "expiry", "broken")}, 2),
    ("expiring", _expiring, {("etcd1-server", "expiry", "warning")}, 1),
    ("wrong-ca-same-name", _wrong_ca, {("etcd1-peer", "chain", "broken")}, 2),
    ("wrong-ca-other-name", _other_ca_name, {("etcd1-peer", "chain", "broken")}, 2),
    ("server-no-client-auth", _no_client_auth, {("etcd1-server", "usages", "broken")}, 2),
    ("client-no-client-auth", _client_no_client_auth, {("admin-client", "usages", "broken")}, 2),
    ("san-missing", _san_missing, {("etcd1-peer", "sans", "broken")}, 2),
    ("key-mismatch", _key_mismatch, {("admin-client", "key-match", "broken")}, 2),
    ("key-0644", _key_0644, {("etcd1:server", "key-mode", "broken")}, 2),
    ("key-0640", _key_0640, {("etcd1-peer", "key-mode", "warning")}, 1),
    ("ca-key-in-member", _ca_key_in_member, {("etcd1", "ca-key-absent", "broken")}, 2),
    ("ca-key-renamed", _ca_key_renamed, {("etcd1", "ca-key-absent", "broken")}, 2),
    ("ca-key-pkcs8", _ca_key_pkcs8, {("etcd1", "ca-key-absent", "broken")}, 2),
    ("installed-ca-differs", _installed_ca_differs, {("etcd1:ca", "chain", "broken")}, 2),
    ("missing-cert", _missing_cert, {("etcd1:peer", "read", "broken")}, 2),
    ("garbled-key", _garbled_key, {("etcd1-server", "read", "broken")}, 2),
]


@pytest.mark.parametrize(("breakage", "want", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_pki_flagged_precisely(
    tmp_path: Path, breakage: Callable[[Pki], None], want: set[tuple[str, str, str]], code: int
) -> None:
    p = Pki(tmp_path)
    breakage(p)
    findings = p.findings()
    assert _not_ok(findings) == want
    assert exit_code(findings) == code


def test_messages_name_the_file(tmp_path: Path) -> None:
    p = Pki(tmp_path)
    _key_0644(p)
    (bad,) = [f for f in p.findings() if f.severity != "ok"]
    assert p.ws.member_paths("etcd1").server_key in bad.message
    assert "0644" in bad.message

    # a wrong certificate (SANs, chain) names the file too, not only its role
    q = Pki(tmp_path / "sans")
    q.reissue("etcd1-peer", ca=create_ca(CaSettings("etcdforge CA"), NOW), ip_sans=("127.0.0.1",))
    by_check = {f.check: f.message for f in q.findings() if f.subject == "etcd1-peer" and f.severity != "ok"}
    peer = str(q.ws.cert_path("etcd1-peer"))
    assert by_check["sans"] == f"{peer}: SANs lack 127.0.0.2"
    assert by_check["chain"].startswith(f"{peer}: ")


def test_warn_days_threshold(tmp_path: Path) -> None:
    p = Pki(tmp_path)
    # every leaf has ~364 days left: a 400-day window puts them all in it, the CA (10 years) not
    findings = p.findings(Thresholds(warn_days=400))
    warned = {f.subject for f in findings if f.check == "expiry" and f.severity == "warning"}
    assert warned == {"etcd1-server", "etcd1-peer", "admin-client", "etcd1:server", "etcd1:peer"}
    assert exit_code(findings) == 1


def test_group_readable_can_be_accepted() -> None:
    key = FileFacts("/k.pem", b"", 0o640, "etcd", "etcd")
    (f,) = check_key_file("x", key, Thresholds(warn_group_readable=False), None)
    assert f.severity == "ok"
    (f,) = check_key_file("x", key, Thresholds(), None)
    assert f.severity == "warning"
    (f,) = check_key_file("x", FileFacts("/k.pem", b"", 0o400), Thresholds(), None)
    assert f.severity == "ok"
    (f,) = check_key_file("x", FileFacts("/k.pem", b"", 0o660), Thresholds(), None)
    assert f.severity == "broken"


def test_owner_mismatch_warns() -> None:
    key = FileFacts("/etc/etcd/pki/server-key.pem", b"", 0o600, "root", "root")
    findings = check_key_file("etcd1:server", key, Thresholds(), "etcd")
    assert [(f.check, f.severity) for f in findings] == [("key-mode", "ok"), ("owner", "warning")]
    assert "root:root" in findings[1].message


def test_missing_configured_ca_breaks_every_chain(tmp_path: Path) -> None:
    p = Pki(tmp_path)
    p.ws.ca_cert.unlink()
    findings = p.findings()
    assert ("ca", "read", "broken") in _not_ok(findings)
    assert ("etcd1-server", "chain", "broken") in _not_ok(findings)


@pytest.mark.parametrize(
    ("severities", "code"),
    [((), 0), (("ok",), 0), (("ok", "warning"), 1), (("warning", "broken", "ok"), 2), (("broken",), 2)],
)
def test_exit_code_mapping(severities: tuple[str, ...], code: int) -> None:
    findings = [Finding("s", "expiry", sev, "m") for sev in severities]  # type: ignore[arg-type]
    assert exit_code(findings) == code


def test_pure_core_needs_no_files() -> None:
    ca = create_ca(CaSettings("c"), NOW)
    leaf = issue(ca, CertRequest("x-client", "x", "client"), NOW)
    from etcdforge.pki.check import CertItem

    facts = PkiFacts(
        ca=FileFacts("ca.pem", ca.cert_pem()),
        ca_key=key_pem(ca.key),
        items=(
            CertItem(
                "x-client",
                "client",
                FileFacts("c.pem", leaf.cert_pem()),
                FileFacts("k.pem", leaf.key_pem(), 0o600),
            ),
        ),
    )
    findings = check_pki(facts, NOW + timedelta(days=400))
    assert ("x-client", "expiry", "broken") in _not_ok(findings)
    assert exit_code(check_pki(facts, NOW)) == 0


def test_cli_exit_codes(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from etcdforge.cli import main

    p = Pki(tmp_path / "ws")
    runner = CliRunner()
    assert runner.invoke(main, ["pki", "check", "--dir", str(p.ws.root)]).exit_code == 0
    os.chmod(p.ws.key_path("etcd1-peer"), 0o640)
    result = runner.invoke(main, ["pki", "check", "--dir", str(p.ws.root), "-o", "json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["status"] == "warning"
    accepted = runner.invoke(main, ["pki", "check", "--dir", str(p.ws.root), "--group-readable-ok"])
    assert accepted.exit_code == 0
    # a check that cannot run is UNKNOWN (3), never mistaken for "warning" or "broken"
    assert runner.invoke(main, ["pki", "check", "--dir", str(tmp_path / "none")]).exit_code == 3
    assert runner.invoke(main, ["pki", "check", "--dir", str(p.ws.root), "--hosts"]).exit_code == 3


def test_gather_host_reads_files_modes_and_finds_the_ca_key(tmp_path: Path) -> None:
    """The hosts-mode gatherer, run through the real Host port on this machine (LocalHost)."""
    import asyncio

    from etcdforge.hosts.local import LocalHost
    from etcdforge.render import MemberPaths
    from etcdforge.verbs.pki_check import gather_host

    p = Pki(tmp_path / "ws")
    etc = tmp_path / "etc-etcd"
    pki = etc / "pki"
    paths = MemberPaths(
        config=str(etc / "etcd.conf.yml"),
        data_dir=str(tmp_path / "data"),
        ca_cert=str(pki / "ca.pem"),
        server_cert=str(pki / "server.pem"),
        server_key=str(pki / "server-key.pem"),
        peer_cert=str(pki / "peer.pem"),
        peer_key=str(pki / "peer-key.pem"),
        peer_ca_cert=str(pki / "peer-ca.pem"),
    )
    atomic_write(Path(paths.ca_cert), p.ca.cert_pem(), 0o644)
    atomic_write(Path(paths.peer_ca_cert), p.peer_ca.cert_pem(), 0o644)
    for role in ("server", "peer"):
        pair = p.pairs[f"etcd1-{role}"]
        atomic_write(pki / f"{role}.pem", pair.cert_pem(), 0o644)
        atomic_write(pki / f"{role}-key.pem", pair.key_pem(), 0o640 if role == "peer" else 0o600)
    atomic_write(etc / "old" / "stash", p.ca.key_pem(), 0o600)

    import getpass

    items, files = asyncio.run(
        gather_host(LocalHost("etcd1"), SPEC.members[0], paths, etc_dir=str(etc), key_owner=getpass.getuser())
    )
    ca_facts = gather_local(SPEC, p.ws)
    facts = PkiFacts(
        peer_ca=ca_facts.peer_ca, ca=ca_facts.ca, ca_key=ca_facts.ca_key, items=tuple(items), members=(files,)
    )
    findings = check_pki(facts, NOW)
    assert _not_ok(findings) == {("etcd1:peer", "key-mode", "warning"), ("etcd1", "ca-key-absent", "broken")}
    (leak,) = [f for f in findings if f.check == "ca-key-absent"]
    assert str(etc / "old" / "stash") in leak.message

    # a key that is not the certificate's: found from the public half the host computed
    atomic_write(Path(paths.server_key), p.pairs["etcd1-peer"].key_pem(), 0o600)
    items, _ = asyncio.run(gather_host(LocalHost("etcd1"), SPEC.members[0], paths, etc_dir=str(etc)))
    findings = check_pki(
        PkiFacts(peer_ca=ca_facts.peer_ca, ca=ca_facts.ca, ca_key=None, items=tuple(items)), NOW
    )
    assert ("etcd1:server", "key-match", "broken") in _not_ok(findings)
    assert ("etcd1:peer", "key-match", "broken") not in _not_ok(findings)

    Path(paths.peer_cert).unlink()
    items, _ = asyncio.run(gather_host(LocalHost("etcd1"), SPEC.members[0], paths, etc_dir=str(etc)))
    findings = check_pki(
        PkiFacts(peer_ca=ca_facts.peer_ca, ca=ca_facts.ca, ca_key=None, items=tuple(items)), NOW
    )
    assert ("etcd1:peer", "read", "broken") in _not_ok(findings)


class _CountingHost:
    """The real LocalHost port, counting the commands (each one an SSH session on a real host)."""

    def __init__(self) -> None:
        from etcdforge.hosts.local import LocalHost

        self.inner = LocalHost("etcd1")
        self.name = "etcd1"
        self.runs = 0
        self.output = b""

    async def run(self, argv: object, **kw: object) -> object:
        self.runs += 1
        result = await self.inner.run(argv, **kw)  # type: ignore[arg-type]
        self.output += result.stdout
        return result

    async def read_file(self, path: str) -> bytes | None:
        raise AssertionError("gather_host must read everything in its one command")

    async def sha256(self, paths: object) -> object:
        raise AssertionError("gather_host must hash everything in its one command")


def _host_layout(tmp_path: Path) -> tuple[Path, object]:
    from etcdforge.render import MemberPaths

    etc = tmp_path / "etc-etcd"
    pki = etc / "pki"
    return etc, MemberPaths(
        config=str(etc / "etcd.conf.yml"),
        data_dir=str(tmp_path / "data"),
        ca_cert=str(pki / "ca.pem"),
        server_cert=str(pki / "server.pem"),
        server_key=str(pki / "server-key.pem"),
        peer_cert=str(pki / "peer.pem"),
        peer_key=str(pki / "peer-key.pem"),
        peer_ca_cert=str(pki / "peer-ca.pem"),
    )


def test_gather_host_is_one_command_and_judges_a_symlinked_key_by_its_target(tmp_path: Path) -> None:
    import asyncio
    import getpass

    from etcdforge.verbs.pki_check import gather_host

    p = Pki(tmp_path / "ws")
    etc, paths = _host_layout(tmp_path)
    pki = etc / "pki"
    atomic_write(pki / "ca.pem", p.ca.cert_pem(), 0o644)
    atomic_write(pki / "peer-ca.pem", p.peer_ca.cert_pem(), 0o644)
    for role in ("server", "peer"):
        pair = p.pairs[f"etcd1-{role}"]
        atomic_write(pki / f"{role}.pem", pair.cert_pem(), 0o644)
        atomic_write(tmp_path / "vault" / f"{role}-key.pem", pair.key_pem(), 0o600)
        (pki / f"{role}-key.pem").symlink_to(tmp_path / "vault" / f"{role}-key.pem")
    # the CA key PKCS#8-re-encoded under an innocent name, and a big file the scan must skip unread
    pkcs8 = p.ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(etc / "spare.pem", pkcs8, 0o600)
    atomic_write(etc / "etcd.log", p.ca.key_pem() + b"x" * 100_000, 0o600)

    host = _CountingHost()
    items, files = asyncio.run(
        gather_host(host, SPEC.members[0], paths, etc_dir=str(etc), key_owner=getpass.getuser())  # type: ignore[arg-type]
    )
    assert host.runs == 1
    assert str(etc / "etcd.log") not in files.digests
    # no private key leaves the host, in any encoding: only public halves and digests come back
    import base64

    for key in (pkcs8, p.ca.key_pem(), *(p.pairs[f"etcd1-{r}"].key_pem() for r in ("server", "peer"))):
        body = b"".join(line for line in key.splitlines() if not line.startswith(b"-----"))
        assert body[:40] not in host.output and base64.b64encode(key)[:40] not in host.output
    ca = gather_local(SPEC, p.ws)
    findings = check_pki(
        PkiFacts(ca=ca.ca, ca_key=ca.ca_key, items=tuple(items), members=(files,), peer_ca=ca.peer_ca), NOW
    )
    # a symlink's own mode is 0777: the key is judged by the file etcd reads through it (0600)
    assert _not_ok(findings) == {("etcd1", "ca-key-absent", "broken")}
    (leak,) = [f for f in findings if f.check == "ca-key-absent"]
    assert str(etc / "spare.pem") in leak.message
    (mode,) = [f for f in findings if f.subject == "etcd1:server" and f.check == "key-mode"]
    assert mode.message == f"etcd1:{pki / 'server-key.pem'} is 0600"


def test_parse_check_output_recorded() -> None:
    """Recorded output of the check script: each kind of per-file report, the scan, a failed find."""
    from etcdforge.verbs.pki_check import parse_check_output

    wanted = (
        "/e/pki/ca.pem",
        "/e/pki/server.pem",
        "/e/pki/server-key.pem",
        "/e/pki/peer-key.pem",
        "/e/pki/peer.pem",
    )
    output = (
        "@file /e/pki/ca.pem\nmeta 644 root root\ndata aGVsbG8=\n"
        "@file /e/pki/server.pem\nmissing\n"
        "@file /e/pki/server-key.pem\nmeta 600 etcd etcd\nunreadable permission denied\n"
        "@file /e/pki/peer-key.pem\nmeta 600 etcd etcd\npub aGk=\n"
        "@file /e/pki/peer.pem\nstat-error stat: cannot statx '/e/pki/peer.pem': Input/output error\n"
        "@scan\n" + "ab" * 32 + " - /e/old stash\n" + "cd" * 32 + " aGk= /e/pki/ca.pem\n"
        "@find 1\n@end\n"
    )
    read, files = parse_check_output(output, "etcd2", wanted, "/e")
    assert read["/e/pki/ca.pem"] == FileFacts("etcd2:/e/pki/ca.pem", b"hello", 0o644, "root", "root")
    assert read["/e/pki/server.pem"] == FileFacts("etcd2:/e/pki/server.pem", None)
    assert read["/e/pki/server-key.pem"].problem == "unreadable: permission denied"
    assert read["/e/pki/server-key.pem"].mode == 0o600
    assert read["/e/pki/peer.pem"].problem == (
        "cannot stat: stat: cannot statx '/e/pki/peer.pem': Input/output error"
    )
    assert files.digests == {"/e/old stash": "ab" * 32, "/e/pki/ca.pem": "cd" * 32}
    # a key's report is the SHA-256 of its public half, computed from what the host sent (never the key)
    hi = hashlib.sha256(b"hi").hexdigest()
    assert read["/e/pki/peer-key.pem"] == FileFacts(
        "etcd2:/e/pki/peer-key.pem", None, 0o600, "etcd", "etcd", public_sha256=hi
    )
    assert files.public_keys == {"/e/pki/ca.pem": hi} and not files.pem_keys
    assert files.problem == "could not scan all of /e (find exited 1)"
    with pytest.raises(ValueError, match="cut short"):
        parse_check_output(output.removesuffix("@end\n"), "etcd2", wanted, "/e")


def test_an_incomplete_scan_is_a_warning_not_a_false_ok() -> None:
    from etcdforge.pki.check import MemberFiles, check_member_files

    (finding,) = check_member_files(
        MemberFiles("etcd2", {}, problem="could not scan all of /e"), None, None, ()
    )
    assert (finding.severity, finding.message) == (
        "warning",
        "could not scan all of /e: a copy of the CA key could be there",
    )
    # a copy found is broken whatever else happened
    (finding,) = check_member_files(
        MemberFiles("etcd2", {"/e/pki/ca-key.pem": "00"}, problem="x"), None, None, ("ca-key.pem",)
    )
    assert finding.severity == "broken"


def test_during_a_ca_rotation_the_bundle_and_the_previous_ca_are_understood(tmp_path: Path) -> None:
    """Mid-rotation: members trust old + new (pki/trust.pem) and leaves of the old CA are still in use
    after the new CA signs: warnings, not broken chains; without the bundle the same leaf is broken."""
    p = Pki(tmp_path)
    new = create_ca(CaSettings("etcdforge CA"), NOW)
    bundle = p.ca.cert_pem() + new.cert_pem()
    atomic_write(p.ws.trust_bundle, bundle, 0o644)
    atomic_write(Path(p.ws.member_paths("etcd1").ca_cert), bundle, 0o644)
    # phase trust-both: the old CA still signs
    assert _not_ok(p.findings()) == set()
    # phase reissue, half done: the new CA signs, the member's copies are still from the old CA
    _write_pair(p.ws.pki_dir, "ca", new)
    for name in p.requests:
        if p.requests[name].profile != "peer":
            p.reissue(name, ca=new)
    findings = p.findings()
    assert _not_ok(findings) == {("etcd1:server", "chain", "warning")}  # (peers have their own CA)
    assert "rotation is in progress" in next(f.message for f in findings if f.subject == "etcd1:server"
                                             and f.check == "chain")  # fmt: skip
    assert exit_code(findings) == 1
    p.ws.trust_bundle.unlink()
    assert ("etcd1:server", "chain", "broken") in _not_ok(p.findings())


def test_a_stale_trust_bundle_on_a_member_is_broken(tmp_path: Path) -> None:
    """A trust.pem left from a rotation that no longer holds the configured CA (the CA was replaced some
    other way) must not be blessed: members with it would not trust their own certificates."""
    p = Pki(tmp_path)
    stale = create_ca(CaSettings("etcdforge CA"), NOW).cert_pem()
    atomic_write(p.ws.trust_bundle, stale, 0o644)
    atomic_write(Path(p.ws.member_paths("etcd1").ca_cert), stale, 0o644)
    findings = p.findings()
    assert ("etcd1:ca", "chain", "broken") in _not_ok(findings)
    assert "stale trust bundle" in next(
        f.message for f in findings if f.subject == "etcd1:ca" and f.check == "chain"
    )
