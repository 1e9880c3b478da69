"""known_hosts decisions with OpenSSH semantics: known / unknown / changed / revoked, ports, hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import asyncssh
import pytest

from etcdforge.hosts.known_hosts import (
    Verdict,
    append_known_host,
    check_host_key,
    fingerprint,
    host_entry,
    known_keys,
    preferred_algorithms,
)


def _key(alg: str = "ssh-ed25519") -> asyncssh.SSHKey:
    return asyncssh.generate_private_key(alg).convert_to_public()


def _pub(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _hashed(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.fixture(scope="module")
def k1() -> asyncssh.SSHKey:
    return _key()


@pytest.fixture(scope="module")
def k2() -> asyncssh.SSHKey:
    return _key()


def _verdict(
    path: Path, key: asyncssh.SSHKey, host: str = "etcd1", addr: str = "10.0.0.1", port: int = 22
) -> Verdict:
    return check_host_key(known_keys(path, host, addr, port), key).verdict


def test_missing_file_means_unknown(tmp_path: Path, k1: asyncssh.SSHKey) -> None:
    check = check_host_key(known_keys(tmp_path / "absent", "etcd1", "10.0.0.1", 22), k1)
    assert check.verdict is Verdict.UNKNOWN and check.fingerprint == fingerprint(k1)
    assert check.fingerprint.startswith("SHA256:")


def test_known_by_the_specs_name_only_never_by_the_address_it_resolves_to(
    tmp_path: Path, k1: asyncssh.SSHKey
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"etcd1 {_pub(k1)}\n")
    assert _verdict(kh, k1) is Verdict.KNOWN
    kh.write_text(f"other,etcd* {_pub(k1)}\n")
    assert _verdict(kh, k1) is Verdict.KNOWN
    # a line for the address etcd1 resolves to now (another machine's, once) does not vouch for etcd1
    kh.write_text(f"10.0.0.1 {_pub(k1)}\n")
    assert _verdict(kh, k1) is Verdict.UNKNOWN
    assert _verdict(kh, k1, port=2222) is Verdict.UNKNOWN
    assert _verdict(kh, k1, host="10.0.0.1") is Verdict.KNOWN  # a spec that names the address


def test_hashed_entries(tmp_path: Path, k1: asyncssh.SSHKey, k2: asyncssh.SSHKey) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{_hashed('etcd1')} {_pub(k1)}\n{_hashed('[etcd1]:2222')} {_pub(k2)}\n")
    assert _verdict(kh, k1) is Verdict.KNOWN
    assert _verdict(kh, k2, port=2222) is Verdict.KNOWN
    assert _verdict(kh, k1, port=2222) is Verdict.CHANGED


def test_ports_do_not_fall_back_to_the_bare_host(
    tmp_path: Path, k1: asyncssh.SSHKey, k2: asyncssh.SSHKey
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"etcd1 {_pub(k1)}\n[etcd1]:2222 {_pub(k2)}\n")
    assert _verdict(kh, k1) is Verdict.KNOWN
    assert _verdict(kh, k2) is Verdict.CHANGED
    assert _verdict(kh, k2, port=2222) is Verdict.KNOWN
    assert _verdict(kh, k1, port=2222) is Verdict.CHANGED
    assert _verdict(kh, k1, port=2223) is Verdict.UNKNOWN  # OpenSSH: no fallback to "etcd1"
    kh.write_text(f"[10.0.0.1]:2222 {_pub(k2)}\n")
    assert _verdict(kh, k2, port=2222) is Verdict.UNKNOWN  # by the spec's name only (etcd1)
    assert _verdict(kh, k2, host="10.0.0.1", port=2222) is Verdict.KNOWN


def test_changed_names_lines_and_old_fingerprints(
    tmp_path: Path, k1: asyncssh.SSHKey, k2: asyncssh.SSHKey
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"# comment\nnot a valid line at all\nother {_pub(k2)}\netcd1,10.0.0.1 {_pub(k1)}\n")
    check = check_host_key(known_keys(kh, "etcd1", "10.0.0.1", 22), k2)
    assert check.verdict is Verdict.CHANGED
    assert check.lines == (4,)
    assert check.old_fingerprints == (fingerprint(k1),)
    assert check.fingerprint == fingerprint(k2)


def test_revoked_beats_everything(tmp_path: Path, k1: asyncssh.SSHKey) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"etcd1 {_pub(k1)}\n@revoked * {_pub(k1)}\n")
    check = check_host_key(known_keys(kh, "etcd1", "10.0.0.1", 22), k1)
    assert check.verdict is Verdict.REVOKED and check.lines == (2,)


def test_cert_authority_lines_do_not_vouch_for_plain_keys(tmp_path: Path, k1: asyncssh.SSHKey) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"@cert-authority * {_pub(k1)}\n")
    assert _verdict(kh, k1) is Verdict.UNKNOWN


def test_preferred_algorithms_follow_the_known_keys(tmp_path: Path, k1: asyncssh.SSHKey) -> None:
    kh = tmp_path / "known_hosts"
    rsa = _key("ssh-rsa")
    kh.write_text(f"etcd1 {_pub(rsa)}\n")
    algs = preferred_algorithms(known_keys(kh, "etcd1", "", 22))
    assert "rsa-sha2-256" in algs and "ssh-ed25519" not in algs
    assert preferred_algorithms([]) == []


def test_host_entry() -> None:
    assert host_entry("etcd1", 22) == "etcd1"
    assert host_entry("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_append_keeps_lines_mode_and_is_idempotent(
    tmp_path: Path, k1: asyncssh.SSHKey, k2: asyncssh.SSHKey
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"# mine\nother {_pub(k2)}")  # no trailing newline
    kh.chmod(0o600)
    append_known_host(kh, "10.0.0.1", 2222, k1)
    append_known_host(kh, "10.0.0.1", 2222, k1)
    assert kh.read_text() == f"# mine\nother {_pub(k2)}\n[10.0.0.1]:2222 {_pub(k1)}\n"
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert _verdict(kh, k1, host="10.0.0.1", addr="10.0.0.1", port=2222) is Verdict.KNOWN


def test_append_creates_the_file(tmp_path: Path, k1: asyncssh.SSHKey) -> None:
    kh = tmp_path / "new" / "known_hosts"
    append_known_host(kh, "etcd1", 22, k1)
    assert kh.read_text() == f"etcd1 {_pub(k1)}\n"


def test_concurrent_appends_lose_no_line(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    keys = [_key() for _ in range(12)]
    threads = [
        threading.Thread(target=append_known_host, args=(kh, f"etcd{i}", 22, key))
        for i, key in enumerate(keys)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = kh.read_text().splitlines()
    assert sorted(lines) == sorted(f"etcd{i} {_pub(key)}" for i, key in enumerate(keys))


def test_without_an_identity_file_only_the_default_identity_is_used_and_its_absence_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No silent fall-back to whatever asyncssh would try: the spec's file, else the first of
    ~/.ssh/id_ed25519, id_ecdsa, id_rsa, named in every error."""
    import asyncio

    from etcdforge.hosts.errors import HostAuthError
    from etcdforge.hosts.ssh import NO_IDENTITY, SshTarget, _client_keys, default_identity

    monkeypatch.setenv("HOME", str(tmp_path))
    target = SshTarget(host="127.0.0.1", port=22, user="root", identity_file=None, sudo=False)
    assert asyncio.run(_client_keys("etcd1", target)) is None  # no public-key login is tried at all
    err = HostAuthError("etcd1", user="root", identity_file=None, reason=NO_IDENTITY)
    assert "ssh.identity_file is not set" in str(err) and "set ssh.identity_file" in (err.hint or "")
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    for name in ("id_rsa", "id_ecdsa"):
        key = asyncssh.generate_private_key("ssh-rsa" if name == "id_rsa" else "ecdsa-sha2-nistp256")
        (ssh / name).write_bytes(key.export_private_key())
    assert default_identity() == ssh / "id_ecdsa"  # OpenSSH's order: ed25519, ecdsa, rsa
    keys = asyncio.run(_client_keys("etcd1", target))
    assert len(keys) == 1 and keys[0].algorithm == b"ecdsa-sha2-nistp256"
