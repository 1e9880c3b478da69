"""The host port's pure parts: the one quoting function, the remote command line, error messages."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from etcdforge.errors import EtcdforgeError
from etcdforge.hosts import HostCommandError, HostError, RunResult, shell_join
from etcdforge.hosts.base import check_result, remote_command, stderr_tail, validate_mode, validate_path
from etcdforge.hosts.errors import (
    HostAuthError,
    HostCommandTimeout,
    HostKeyChanged,
    HostKeyUnknown,
    HostRouteRefused,
    HostUnreachable,
    SudoError,
)

AWKWARD = ["a b", "it's", '"q"', "$HOME", "; rm -rf /", "`id`", "$(id)", "x\ny", "", "*", "\\", "-n", "é"]


def test_shell_join_round_trips_through_a_real_shell() -> None:
    line = shell_join(["printf", "[%s]\\n", *AWKWARD])
    out = subprocess.run(["sh", "-c", line], capture_output=True, check=True).stdout.decode()
    assert out == "".join(f"[{a}]\n" for a in AWKWARD)
    assert shlex.split(shell_join(AWKWARD)) == AWKWARD


def test_shell_join_refuses_strings_and_empty_argv() -> None:
    with pytest.raises(TypeError):
        shell_join("rm -rf /")
    with pytest.raises(ValueError):
        shell_join([])


def test_remote_command_sudo_and_timeout_prefixes() -> None:
    assert remote_command(["ls", "a b"], sudo=False) == "ls 'a b'"
    assert remote_command(["ls", "a b"], sudo=True) == "sudo -n -- ls 'a b'"
    assert remote_command(["ls"], sudo=True, timeout=2.5) == "sudo -n -- timeout -k 5s 2.500s ls"
    assert shlex.split(remote_command(AWKWARD, sudo=True, timeout=1))[-len(AWKWARD) :] == AWKWARD


def test_stderr_tail_keeps_the_last_lines_bounded() -> None:
    err = b"".join(f"line{i}\n".encode() for i in range(20)) + b"\n  \n"
    assert stderr_tail(err) == " | ".join(f"line{i}" for i in range(15, 20))
    assert stderr_tail(b"\xff\xfe bad utf8") == "\ufffd\ufffd bad utf8"
    assert len(stderr_tail(b"x" * 10_000)) <= 1001
    assert stderr_tail(b"") == ""


def test_check_result_names_host_command_status_and_stderr() -> None:
    ok = RunResult(("true",), 0, b"", b"")
    assert check_result("h1", ok) is ok
    bad = RunResult(("etcdctl", "member list"), 2, b"out", b"first\nError: context deadline exceeded\n")
    with pytest.raises(HostCommandError) as info:
        check_result("h1", bad)
    err = info.value
    assert isinstance(err, HostError) and isinstance(err, EtcdforgeError)
    assert (err.host, err.exit_status, err.command) == ("h1", 2, "etcdctl 'member list'")
    assert str(err) == (
        "command failed on h1 with exit status 2: etcdctl 'member list'; "
        "stderr: first | Error: context deadline exceeded"
    )
    with pytest.raises(HostCommandError, match=r"write /etc/x \(mode 0600\)"):
        check_result(
            "h1", RunResult(("sh", "-c", "long script"), 1, b"", b""), display="write /etc/x (mode 0600)"
        )


def test_paths_and_modes_are_validated() -> None:
    assert validate_path("/etc/etcd/x") == "/etc/etcd/x"
    for bad in ("etc/x", "-rf", "", "/a\0b"):
        with pytest.raises(ValueError):
            validate_path(bad)
    assert validate_mode(0o4755) == 0o4755
    for mode in (-1, 0o10000):
        with pytest.raises(ValueError):
            validate_mode(mode)


def test_error_messages_are_one_line_and_actionable() -> None:
    errors: list[HostError] = [
        HostUnreachable("etcd1", "10.0.0.1:22", "connection refused"),
        HostRouteRefused("etcd1", "10.0.0.1"),
        HostKeyUnknown("etcd1", "10.0.0.1:22", "SHA256:abc", "/ws/known_hosts"),
        HostKeyChanged(
            "etcd1",
            "10.0.0.1:22",
            new_fingerprint="SHA256:new",
            old_fingerprints=["SHA256:old"],
            known_hosts="/ws/known_hosts",
            lines=[3],
        ),
        HostAuthError("etcd1", user="deploy", identity_file="/ws/id_ed25519"),
        SudoError("etcd1", user="deploy", detail="sudo: a password is required"),
        HostCommandTimeout("etcd1", command="sleep 100", timeout=1.5),
    ]
    for err in errors:
        assert err.host == "etcd1"
        assert "\n" not in str(err)
        assert "etcd1" in str(err)
    unreachable, _route, unknown, changed, auth, sudo, timeout = (str(e) for e in errors)
    assert "10.0.0.1:22" in unreachable and "firewall" in unreachable
    assert "SHA256:abc" in unknown and "--accept-new-host-keys" in unknown
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed
    assert "SHA256:old" in changed and "SHA256:new" in changed and "/ws/known_hosts:3" in changed
    assert "deploy" in auth and "/ws/id_ed25519" in auth
    assert "user deploy cannot run sudo without a password on etcd1" in sudo
    assert "timed out" in timeout and "1.5s" in timeout


def test_revoked_key_message() -> None:
    err = HostKeyChanged(
        "etcd1",
        "h:22",
        new_fingerprint="SHA256:x",
        old_fingerprints=[],
        known_hosts="/k",
        lines=[7],
        revoked=True,
    )
    assert "REVOKED" in str(err) and "/k:7" in str(err)


def test_a_batch_cut_anywhere_runs_nothing_or_everything(tmp_path: object) -> None:
    """Security item 8: `sh -s` runs lines as they arrive; a dropped connection must never run a cut line
    (`-m 0600` read as `-m 06`). Every prefix of a real batch is fed to a real sh: the result is either
    untouched or complete, never a file with another mode or partial content."""
    import os
    import shutil
    import stat
    import tempfile
    from pathlib import Path

    from etcdforge.hosts.base import CommandOp, WriteOp, compile_batch
    from etcdforge.hosts.scripts import WRITE_SCRIPT

    # A cut command line can name a prefix of a path (`install -d -m 0700 /tmp`): as root, every prefix
    # runs as nobody in a directory of its own below /run (root's, 0755), so whatever the code under
    # test does, nothing outside that directory can change.
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="etcdforge-cut-", dir="/run" if as_root else str(tmp_path)))
    as_nobody: list[str] = []
    if as_root:
        os.chown(root, 65534, 65534)
        os.chmod(root, 0o755)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    try:
        secret = b"-----BEGIN PRIVATE KEY-----\n" + b"k" * 300
        script = compile_batch(
            [CommandOp(("install", "-d", "-m", "0700", str(root / "d"))),
             WriteOp(str(root / "d" / "key.pem"), secret, 0o600, None, None)],
            WRITE_SCRIPT,
        )  # fmt: skip
        outcomes = set()
        for cut in [*range(0, len(script), 5), len(script) - 1, len(script)]:
            if (root / "d").exists():
                shutil.rmtree(root / "d")
            subprocess.run([*as_nobody, "sh", "-s"], input=script[:cut], capture_output=True, check=False,
                           cwd=root)  # fmt: skip
            key = root / "d" / "key.pem"
            if not (root / "d").exists():
                outcomes.add("nothing")
                continue
            assert stat.S_IMODE((root / "d").stat().st_mode) == 0o700, cut
            if key.exists():
                assert key.read_bytes() == secret and stat.S_IMODE(key.stat().st_mode) == 0o600, cut
                outcomes.add("everything")
            else:
                assert cut == len(script), f"a cut at byte {cut} of {len(script)} ran part of the batch"
        assert outcomes == {"nothing", "everything"}
    finally:
        shutil.rmtree(root, ignore_errors=True)
