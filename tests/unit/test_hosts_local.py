"""LocalHost: argv without a shell, timeouts that kill, atomic writes with mode/owner, reads, hashes."""

from __future__ import annotations

import asyncio
import hashlib
import pwd
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from support import need_root

from etcdforge.hosts import Host, HostCommandError, HostCommandTimeout, HostError, LocalHost

T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())  # type: ignore[arg-type]


def test_local_host_satisfies_the_protocol() -> None:
    assert isinstance(LocalHost(), Host)
    assert LocalHost("ctl").name == "ctl"


def test_run_passes_argv_verbatim_without_a_shell() -> None:
    args = ["a b", "$HOME", "; echo pwned", "`id`", "x\ny", ""]

    async def body() -> None:
        result = await LocalHost().run(["printf", "[%s]\\n", *args])
        assert result.stdout.decode() == "".join(f"[{a}]\n" for a in args)
        assert result.argv == ("printf", "[%s]\\n", *args)

    run(body)


def test_run_input_and_exit_status() -> None:
    async def body() -> None:
        host = LocalHost("ctl")
        assert (await host.run(["cat"], input=b"\x00\xffdata")).stdout == b"\x00\xffdata"
        assert (await host.run(["cat"])).stdout == b""  # no input: stdin is at EOF, nothing waits
        with pytest.raises(HostCommandError) as info:
            await host.run(["sh", "-c", "echo boom >&2; exit 4"], input=b"TOPSECRET")
        assert info.value.exit_status == 4 and info.value.stderr_tail == "boom"
        assert "ctl" in str(info.value) and "TOPSECRET" not in str(info.value)
        assert (await host.run(["sh", "-c", "exit 4"], check=False)).exit_status == 4
        missing = await host.run(["/no/such/binary"], check=False)
        assert missing.exit_status == 127
        with pytest.raises(HostCommandError):
            await host.run(["/no/such/binary"])

    run(body)


def test_run_timeout_kills_the_process_group() -> None:
    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(HostCommandTimeout):
            # the child `sleep` holds the pipes too: only killing the group ends communicate()
            await LocalHost().run(["sh", "-c", "sleep 30 & sleep 30; wait"], timeout=0.3)
        assert time.monotonic() - started < 5

    run(body)


def test_write_file_mode_owner_and_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key.pem"
    data = bytes(range(256)) * 10

    async def body() -> None:
        host = LocalHost()
        await host.write_file(str(path), data, mode=0o600)
        assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == 0o600
        await host.write_file(str(path), b"v2", mode=0o640)
        assert path.read_bytes() == b"v2" and stat.S_IMODE(path.stat().st_mode) == 0o640
        assert sorted(p.name for p in path.parent.iterdir()) == ["key.pem"]

    run(body)


def test_write_file_owner_and_group(tmp_path: Path) -> None:
    need_root("chown")
    path = tmp_path / "owned"

    async def body() -> None:
        await LocalHost().write_file(str(path), b"x", mode=0o600, owner="nobody", group="nogroup")

    run(body)
    st = path.stat()
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and stat.S_IMODE(st.st_mode) == 0o600


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"old")

    async def body() -> None:
        host = LocalHost()
        with pytest.raises(HostError, match="no user"):
            await host.write_file(str(path), b"new", mode=0o600, owner="no-such-user-xyz")
        with pytest.raises(HostError, match="no group"):
            await host.write_file(str(path), b"new", mode=0o600, group="no-such-group-xyz")
        with pytest.raises(ValueError):
            await host.write_file(str(path), b"new", mode=0o77777)
        with pytest.raises(ValueError):
            await host.write_file("relative", b"new", mode=0o600)

    run(body)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_concurrent_writes_to_one_path_never_tear(tmp_path: Path) -> None:
    path = tmp_path / "f"
    contents = [bytes([i]) * 100_000 for i in range(20)]

    async def body() -> None:
        host = LocalHost()
        await asyncio.gather(*(host.write_file(str(path), c, mode=0o600) for c in contents))

    run(body)
    assert path.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_read_file_and_sha256(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"alpha")
    odd = tmp_path / "new\nline"
    odd.write_bytes(b"")

    async def body() -> None:
        host = LocalHost()
        assert await host.read_file(str(a)) == b"alpha"
        assert await host.read_file(str(tmp_path / "missing")) is None
        assert await host.read_file(str(a / "under-a-file")) is None
        with pytest.raises(HostError):
            await host.read_file(str(tmp_path))  # a directory is an error, not "absent"
        paths = [str(a), str(odd), str(tmp_path / "missing"), str(tmp_path)]
        got = await host.sha256(paths)
        assert list(got) == paths
        assert got[str(a)] == hashlib.sha256(b"alpha").hexdigest()
        assert got[str(odd)] == hashlib.sha256(b"").hexdigest()
        assert got[str(tmp_path / "missing")] is None and got[str(tmp_path)] is None
        await host.close()

    run(body)


def test_make_private_dirs_is_mkdir_p_m_0700_in_process(tmp_path: Path) -> None:
    """The same outcome as ``mkdir -p -m 0700``, checked side by side: a new leaf 0700 (parents as the
    umask makes them), an existing directory and a symlink to one left alone, every path tried and the
    failures reported together as one HostError."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"

    def layout(root: Path) -> list[str]:
        root.mkdir()
        (root / "kept").mkdir(mode=0o755)
        (root / "target").mkdir(mode=0o750)
        (root / "link").symlink_to(root / "target")
        (root / "file").write_text("x")
        return [str(root / p) for p in ("a/b/new", "kept", "link", "file", "file/sub", "c/new")]

    want = layout(theirs)
    mkdir = asyncio.run(LocalHost().run(["mkdir", "-p", "-m", "0700", "--", *want], check=False))
    assert mkdir.exit_status != 0  # the regular file and a path under it fail there too
    with pytest.raises(HostError) as failed:
        run(lambda: LocalHost().make_private_dirs(layout(ours)))
    assert str(ours / "file") in str(failed.value) and str(ours / "file/sub") in str(failed.value)

    def modes(root: Path) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for p in ("a", "a/b", "a/b/new", "kept", "target", "file", "c/new"):
            path = root / p
            out[p] = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
        return out

    assert modes(ours) == modes(theirs)
    assert modes(ours)["a/b/new"] == 0o700 and modes(ours)["c/new"] == 0o700  # tried after the failures
    assert (ours / "link").is_symlink() and modes(ours)["target"] == 0o750
    with pytest.raises(ValueError):
        run(lambda: LocalHost().make_private_dirs(["relative/path"]))
