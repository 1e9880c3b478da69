"""The control machine itself as a :class:`~etcdforge.hosts.base.Host`: asyncio subprocesses and files.

Used by local mode and by tests. Commands are argv lists run without a shell; a command that outlives
its timeout is killed with its whole process group (it runs in a session of its own), so no child is
left holding our pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import os
import pwd
import signal
from collections.abc import Sequence
from pathlib import Path

from etcdforge.fsutil import atomic_write, ensure_dir
from etcdforge.hosts.base import (
    BatchOp,
    RunResult,
    WriteOp,
    check_result,
    shell_join,
    validate_mode,
    validate_path,
)
from etcdforge.hosts.errors import HostCommandTimeout, HostError

_HASH_CHUNK = 1 << 20


class LocalHost:
    """This machine. Writes go through :func:`etcdforge.fsutil.atomic_write` (then chown if asked)."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        # serialise writes to one path within this host, so the last call's content deterministically wins
        self._write_locks: dict[str, asyncio.Lock] = {}

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 60,
    ) -> RunResult:
        args = tuple(argv)
        display = shell_join(args)  # also validates argv (a list, not empty)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            # what a shell would say: 127 not found, 126 not executable
            status = 127 if isinstance(exc, FileNotFoundError) else 126
            result = RunResult(args, status, b"", f"{args[0]}: {exc.strerror}\n".encode())
            return check_result(self.name, result) if check else result
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(input), timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise HostCommandTimeout(self.name, command=display, timeout=timeout or 0) from None
        except BaseException:  # cancelled: do not leave the command running
            _kill_group(proc.pid)
            await proc.wait()
            raise
        assert proc.returncode is not None
        result = RunResult(args, proc.returncode, stdout, stderr)
        return check_result(self.name, result) if check else result

    async def apply_batch(self, ops: Sequence[BatchOp], *, timeout: float | None = 120) -> None:
        """Here a round trip costs nothing: the ops run one by one with the same semantics."""
        for op in ops:
            if isinstance(op, WriteOp):
                await self.write_file(op.path, op.data, mode=op.mode, owner=op.owner, group=op.group)
            else:
                await self.run(op.argv, timeout=timeout)

    async def write_file(
        self, path: str, data: bytes, *, mode: int, owner: str | None = None, group: str | None = None
    ) -> None:
        validate_path(path)
        validate_mode(mode)
        # resolve names before touching anything: an unknown owner must leave the old file as it was
        uid = self._uid(owner) if owner is not None else -1
        gid = self._gid(group) if group is not None else -1
        lock = self._write_locks.setdefault(path, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(self._write, Path(path), data, mode, uid, gid)

    def _write(self, path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
        try:
            # owner and mode are set on the temp file before the rename: atomic, never wider
            atomic_write(path, data, mode, uid=uid, gid=gid)
        except OSError as exc:
            raise HostError(f"cannot write {path} on {self.name}: {exc.strerror}", host=self.name) from None

    def _uid(self, owner: str) -> int:
        try:
            return pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise HostError(f"no user {owner!r} on {self.name}", host=self.name) from None

    def _gid(self, group: str) -> int:
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise HostError(f"no group {group!r} on {self.name}", host=self.name) from None

    async def make_private_dirs(self, paths: Sequence[str]) -> None:
        # in-process: a mkdir command costs a fork of this (large) process per call
        wanted = [validate_path(p) for p in paths]
        failed = await asyncio.to_thread(self._make_dirs, wanted)
        if failed:
            raise HostError(f"cannot create {'; '.join(failed)} on {self.name}", host=self.name)

    @staticmethod
    def _make_dirs(paths: Sequence[str]) -> list[str]:
        failed = []
        for p in paths:  # like mkdir -p: every path is tried, the failures are reported together
            try:
                ensure_dir(Path(p))
            except OSError as exc:
                failed.append(f"{p} ({exc.strerror})")
        return failed

    async def read_file(self, path: str) -> bytes | None:
        validate_path(path)
        return await asyncio.to_thread(self._read, Path(path))

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise HostError(f"cannot read {path} on {self.name}: {exc.strerror}", host=self.name) from None

    async def sha256(self, paths: Sequence[str]) -> dict[str, str | None]:
        for path in paths:
            validate_path(path)
        return await asyncio.to_thread(self._hash_all, tuple(paths))

    def _hash_all(self, paths: tuple[str, ...]) -> dict[str, str | None]:
        return {path: self._hash(path) for path in paths}

    def _hash(self, path: str) -> str | None:
        if not os.path.isfile(path):  # like the remote `[ -f ]`: absent or not a regular file
            return None
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HostError(f"cannot read {path} on {self.name}: {exc.strerror}", host=self.name) from None
        return digest.hexdigest()

    async def close(self) -> None:
        return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


__all__ = ["LocalHost"]
