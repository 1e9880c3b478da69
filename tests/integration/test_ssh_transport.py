"""The SSH host transport against a REAL OpenSSH sshd on 127.0.0.1 (own host keys, own port, own config).

Every sshd is ours: started with ``-D`` (no daemonising) and stopped by its PID at teardown, also when a
test fails. Connections only ever go to loopback: every connect passes the strict ``loopback_only``
route check.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from support import need_root, require

from etcdforge.hosts import (
    HostAuthError,
    HostCommandError,
    HostCommandTimeout,
    HostKeyChanged,
    HostKeyUnknown,
    HostRouteRefused,
    HostUnreachable,
    SudoError,
)
from etcdforge.hosts.ssh import SshHost, SshTarget, connect, loopback_only

SSHD = Path("/usr/sbin/sshd")
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _needs_sshd_and_root() -> None:
    require(None if SSHD.exists() else "openssh-server is not installed", env="ETCDFORGE_REQUIRE_HOST_TESTS")
    need_root("a real sshd with user switching")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True, timeout=30
    )
    return path


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


@dataclass
class Sshd:
    """One sshd process of ours."""

    workdir: Path
    port: int
    host_key: Path
    keys_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def start(self) -> None:
        self.log = self.workdir / f"sshd-{self.port}-{secrets.token_hex(2)}.log"
        config = self.workdir / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.keys_dir}/%u\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "MaxSessions 10\n"
            "LogLevel VERBOSE\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass(frozen=True)
class Env:
    sshd: Sshd
    client_key: Path
    other_key: Path
    keys_dir: Path

    @property
    def port(self) -> int:
        return self.sshd.port

    def target(self, **kw: object) -> SshTarget:
        args: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "identity_file": self.client_key}
        args.update(kw)
        return SshTarget(**args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keys_dir() -> Iterator[Path]:
    """Authorized keys, one file per user (``%u``); traversable by a non-root test user."""
    path = Path(tempfile.mkdtemp(prefix="etcdforge-ssh-keys-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("sshd")
    client_key = _keygen(work / "client")
    other_key = _keygen(work / "other")
    (keys_dir / "root").write_bytes(client_key.with_suffix(".pub").read_bytes())
    (keys_dir / "root").chmod(0o644)
    sshd = Sshd(work, _free_port(), _keygen(work / "host_ed25519"), keys_dir)
    sshd.start()
    try:
        yield Env(sshd, client_key, other_key, keys_dir)
    finally:
        sshd.stop()


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())  # type: ignore[arg-type]


async def _accept(env: Env, known_hosts: Path, **target: object) -> SshHost:
    return await connect(
        "node1",
        env.target(**target),
        known_hosts=known_hosts,
        accept_new_host_keys=True,
        route_check=loopback_only,
    )


# --- commands -----------------------------------------------------------------------------------------


AWKWARD = [
    "a b",
    "it's",
    '"double"',
    "$HOME",
    "${PATH}",
    "; echo pwned",
    "&& false",
    "| cat",
    "`id`",
    "$(id)",
    "line1\nline2",
    "*",
    "",
    "back\\slash",
    "-n",
    "tab\there",
    "ünïcödé",
]


def test_awkward_arguments_arrive_verbatim(env: Env, tmp_path: Path) -> None:
    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            result = await host.run(["printf", "[%s]\\n", *AWKWARD])
            assert result.stdout.decode() == "".join(f"[{a}]\n" for a in AWKWARD)
            assert result.exit_status == 0
            assert result.argv == ("printf", "[%s]\\n", *AWKWARD)
        finally:
            await host.close()

    run(body)


def test_stdin_input_binary(env: Env, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000 + os.urandom(100_000)

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            result = await host.run(["cat"], input=data)
            assert result.stdout == data
            empty = await host.run(["cat"], input=b"")
            assert empty.stdout == b""
        finally:
            await host.close()

    run(body)


def test_non_zero_exit_raises_with_stderr_tail(env: Env, tmp_path: Path) -> None:
    script = "echo out; for i in 1 2 3 4 5 6 7; do echo err$i >&2; done; echo 'last words' >&2; exit 3"

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            with pytest.raises(HostCommandError) as info:
                await host.run(["sh", "-c", script], input=b"SECRET-INPUT")
            err = info.value
            assert err.host == "node1"
            assert err.exit_status == 3
            assert err.stderr_tail.endswith("last words")
            assert "err1" not in err.stderr_tail  # only the tail
            text = str(err)
            assert "node1" in text and "exit status 3" in text and "sh -c" in text
            assert "SECRET-INPUT" not in text
            unchecked = await host.run(["sh", "-c", script], check=False)
            assert unchecked.exit_status == 3 and unchecked.stdout == b"out\n"
            missing = await host.run(["no-such-command-xyz"], check=False)
            assert missing.exit_status == 127
        finally:
            await host.close()

    run(body)


def test_many_concurrent_commands_share_one_connection(env: Env, tmp_path: Path) -> None:
    def logins() -> int:
        return env.sshd.log.read_text(errors="replace").count("Accepted publickey")

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            # more than sshd's MaxSessions (10) at once: the transport queues them on its one connection
            results = await asyncio.gather(
                *(host.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(25))
            )
            assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(25)]
        finally:
            await host.close()

    before = logins()
    run(body)
    assert logins() - before == 1


def test_timeout_kills_the_command_and_the_connection_stays_usable(env: Env, tmp_path: Path) -> None:
    marker = f"{secrets.randbelow(10**6) + 100}.{secrets.randbelow(1000)}"  # a unique `sleep` argument

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            started = time.monotonic()
            with pytest.raises(HostCommandTimeout) as info:
                await host.run(["sleep", marker], timeout=0.5)
            assert time.monotonic() - started < 5
            assert "timed out" in str(info.value) and "node1" in str(info.value)
            assert (await host.run(["echo", "still here"])).stdout == b"still here\n"
        finally:
            await host.close()

    run(body)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, check=False)
        if alive.returncode != 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timed-out remote command is still running")


# --- files --------------------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".etcdforge-tmp-" in p.name]


def test_write_file_atomic_with_mode_and_owner(env: Env, tmp_path: Path) -> None:
    target_dir = tmp_path / "etc"
    target_dir.mkdir()
    path = target_dir / "member key.pem"
    path.write_bytes(b"old content")
    path.chmod(0o644)
    data = bytes(range(256)) + b"\0\n\r\xff" + os.urandom(2 * 1024 * 1024)

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            await host.write_file(str(path), data, mode=0o600, owner="nobody", group="nogroup")
            st = path.stat()
            assert stat.S_IMODE(st.st_mode) == 0o600
            assert st.st_uid == pwd.getpwnam("nobody").pw_uid
            assert path.read_bytes() == data
            assert _leftovers(target_dir) == []

            await host.write_file(str(path), b"", mode=0o640)
            assert path.read_bytes() == b"" and stat.S_IMODE(path.stat().st_mode) == 0o640
            assert path.stat().st_uid == 0

            # a failed write (unknown owner) leaves the old file intact and no temp file behind
            with pytest.raises(HostCommandError) as info:
                await host.write_file(str(path), b"new", mode=0o600, owner="no-such-user-xyz")
            assert "write" in str(info.value) and str(path) in str(info.value)
            assert "no-such-user-xyz" in info.value.stderr_tail
            assert path.read_bytes() == b""
            assert _leftovers(target_dir) == []

            with pytest.raises(HostCommandError):
                await host.write_file(str(tmp_path / "no" / "dir" / "f"), b"x", mode=0o600)
            with pytest.raises(ValueError):
                await host.write_file("relative/path", b"x", mode=0o600)
        finally:
            await host.close()

    run(body)


def test_read_file(env: Env, tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"\x00binary\xffdata\n")

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            assert await host.read_file(str(present)) == b"\x00binary\xffdata\n"
            assert await host.read_file(str(tmp_path / "absent")) is None
            assert await host.read_file(str(tmp_path / "absent-dir" / "x")) is None
            with pytest.raises(HostCommandError):
                await host.read_file(str(tmp_path))  # a directory is not absent: it is an error
        finally:
            await host.close()

    run(body)


def test_sha256_many_files_one_round_trip(env: Env, tmp_path: Path) -> None:
    files = {
        tmp_path / "a": b"alpha",
        tmp_path / "with space": b"",
        tmp_path / "new\nline": os.urandom(70_000),
    }
    for p, content in files.items():
        p.write_bytes(content)
    missing = tmp_path / "missing"

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts")
        try:
            paths = [str(p) for p in files] + [str(missing)]
            got = await host.sha256(paths)
            assert list(got) == paths
            for p, content in files.items():
                assert got[str(p)] == hashlib.sha256(content).hexdigest()
            assert got[str(missing)] is None
            assert await host.sha256([]) == {}
        finally:
            await host.close()

    run(body)


# --- trust --------------------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint(env: Env, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("# nothing for this host\n")

    async def body() -> None:
        await connect("node1", env.target(), known_hosts=known_hosts, route_check=loopback_only)

    with pytest.raises(HostKeyUnknown) as info:
        run(body)
    text = str(info.value)
    assert _fingerprint(env.sshd.host_key.with_suffix(".pub")) in text
    assert "--accept-new-host-keys" in text and "node1" in text
    assert known_hosts.read_text() == "# nothing for this host\n"


def test_accept_new_records_the_key_then_verifies_it(env: Env, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtXp8Ewgd6bYCOE0rd1lBeWsE9v6gIzEGvJ4nmYaQQA\n"
    )

    async def body() -> None:
        host = await _accept(env, known_hosts)
        await host.close()
        lines = known_hosts.read_text().splitlines()
        assert len(lines) == 2 and lines[0].startswith("other.example ")
        assert lines[1].startswith(f"[127.0.0.1]:{env.port} ssh-ed25519 ")
        again = await connect("node1", env.target(), known_hosts=known_hosts, route_check=loopback_only)
        assert (await again.run(["true"])).exit_status == 0
        await again.close()
        # accepting again does not duplicate the line
        third = await _accept(env, known_hosts)
        await third.close()
        assert len(known_hosts.read_text().splitlines()) == 2

    run(body)


def test_hashed_known_hosts_entry_is_honoured(env: Env, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"

    async def body() -> None:
        await (await _accept(env, known_hosts)).close()
        subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
        assert known_hosts.read_text().startswith("|1|")
        host = await connect("node1", env.target(), known_hosts=known_hosts, route_check=loopback_only)
        await host.close()

    run(body)


def test_bare_host_entry_does_not_cover_another_port(env: Env, tmp_path: Path) -> None:
    """Like OpenSSH: a key recorded for ``127.0.0.1`` (port 22) says nothing about port N."""
    known_hosts = tmp_path / "known_hosts"
    other_pub = env.other_key.with_suffix(".pub").read_text().strip()
    known_hosts.write_text(f"127.0.0.1 {other_pub}\n")

    async def body() -> None:
        await connect("node1", env.target(), known_hosts=known_hosts, route_check=loopback_only)

    with pytest.raises(HostKeyUnknown):
        run(body)


def test_changed_host_key_is_always_refused(env: Env, tmp_path: Path) -> None:
    work = tmp_path / "sshd2"
    work.mkdir()
    known_hosts = tmp_path / "known_hosts"
    sshd = Sshd(work, _free_port(), _keygen(work / "host_a"), env.keys_dir)
    sshd.start()
    try:

        async def first() -> None:
            await (await _accept(env, known_hosts, port=sshd.port)).close()

        run(first)
        recorded = known_hosts.read_text()
        old_fp = _fingerprint(sshd.host_key.with_suffix(".pub"))
        sshd.stop()
        sshd.host_key = _keygen(work / "host_b")
        sshd.start()
        new_fp = _fingerprint(sshd.host_key.with_suffix(".pub"))

        async def second() -> None:
            await _accept(env, known_hosts, port=sshd.port)

        with pytest.raises(HostKeyChanged) as info:
            run(second)
        text = str(info.value)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
        assert old_fp in text and new_fp in text
        assert f"{known_hosts}:1" in text
        assert info.value.lines == (1,)
        assert known_hosts.read_text() == recorded  # accept-new never replaces a key
    finally:
        sshd.stop()


def test_wrong_client_key_is_an_auth_error(env: Env, tmp_path: Path) -> None:
    async def body() -> None:
        await _accept(env, tmp_path / "known_hosts", identity_file=env.other_key)

    with pytest.raises(HostAuthError) as info:
        run(body)
    text = str(info.value)
    assert "root" in text and str(env.other_key) in text
    assert env.other_key.read_text().splitlines()[1] not in text  # no key material
    assert "PRIVATE KEY" not in text


def test_missing_identity_file_is_an_auth_error(env: Env, tmp_path: Path) -> None:
    async def body() -> None:
        await _accept(env, tmp_path / "known_hosts", identity_file=tmp_path / "nope")

    with pytest.raises(HostAuthError, match="cannot read the identity file"):
        run(body)


def test_nothing_listening_is_unreachable_quickly(tmp_path: Path) -> None:
    port = _free_port()

    async def body() -> None:
        await connect(
            "node9",
            SshTarget("127.0.0.1", port=port),
            known_hosts=tmp_path / "known_hosts",
            route_check=loopback_only,
            connect_timeout=5,
        )

    started = time.monotonic()
    with pytest.raises(HostUnreachable) as info:
        run(body)
    assert time.monotonic() - started < 3
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "node9" in text and "firewall" in text
    assert "\n" not in text


def test_route_check_refuses_before_any_connection(tmp_path: Path) -> None:
    async def body() -> None:
        await connect(
            "far", SshTarget("192.0.2.1"), known_hosts=tmp_path / "known_hosts", route_check=loopback_only
        )

    started = time.monotonic()
    with pytest.raises(HostRouteRefused):
        run(body)
    assert time.monotonic() - started < 1


# --- sudo ---------------------------------------------------------------------------------------------


def test_sudo_as_root_works(env: Env, tmp_path: Path) -> None:
    require(None if shutil.which("sudo") else "sudo is not installed", env="ETCDFORGE_REQUIRE_HOST_TESTS")

    async def body() -> None:
        host = await _accept(env, tmp_path / "known_hosts", sudo=True)
        try:
            assert (await host.run(["id", "-u"])).stdout == b"0\n"
            await host.write_file(str(tmp_path / "via-sudo"), b"x", mode=0o600)
            assert await host.read_file(str(tmp_path / "via-sudo")) == b"x"
        finally:
            await host.close()

    run(body)


@pytest.fixture
def unprivileged_user(env: Env) -> Iterator[str]:
    """A throw-away system user with our client key authorized and no sudoers entry."""
    name = f"efssh{secrets.token_hex(3)}"
    home = Path(tempfile.mkdtemp(prefix="etcdforge-ssh-home-"))
    proc = subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/sh",
            "--password",
            "*",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        require(f"cannot create a test user: {proc.stderr.strip()}", env="ETCDFORGE_REQUIRE_ROOT")
    try:
        shutil.chown(home, name)
        keys = env.keys_dir / name
        keys.write_bytes(env.client_key.with_suffix(".pub").read_bytes())
        keys.chmod(0o644)
        yield name
    finally:
        (env.keys_dir / name).unlink(missing_ok=True)
        subprocess.run(["userdel", name], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_sudo_without_password_rights_is_a_sudo_error(
    env: Env, tmp_path: Path, unprivileged_user: str
) -> None:
    known_hosts = tmp_path / "known_hosts"

    async def plain() -> None:
        host = await _accept(env, known_hosts, user=unprivileged_user)
        try:
            assert (await host.run(["id", "-un"])).stdout.decode().strip() == unprivileged_user
        finally:
            await host.close()

    run(plain)

    async def with_sudo() -> None:
        await _accept(env, known_hosts, user=unprivileged_user, sudo=True)

    with pytest.raises(SudoError) as info:
        run(with_sudo)
    text = str(info.value)
    assert f"user {unprivileged_user} cannot run sudo without a password on node1" in text
    if shutil.which("sudo") is None:
        assert "not installed" in text
