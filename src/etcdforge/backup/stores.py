"""Backup targets as one small port: put, get, list and delete named objects under the cluster's folder.

Role: :func:`open_store` turns a spec target into a :class:`Store`: a directory on this machine, S3
(``obstore``; GCS and Azure take the same shape), or a directory on another host over SFTP (asyncssh,
host key verified against the spec's known_hosts). Every key is relative to ``<target>/<cluster name>/``.

Invariants:

- An object appears under its name only complete: directories and SFTP write ``<name>.part`` and rename;
  S3 makes an object visible only when its (multipart) upload completes.
- Credentials are read from a file or the environment when the store opens and never appear in a
  message: errors name the target and the key, and the store's first error line only.
- Files move a chunk at a time (memory stays flat whatever the backup's size).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from etcdforge import progress
from etcdforge.errors import BackupError
from etcdforge.fsutil import fsync_dir
from etcdforge.spec import ClusterSpec, DirTarget, S3Target, SftpTarget
from etcdforge.workspace import Workspace, resolve_path

if TYPE_CHECKING:
    from obstore.store import S3Config

CHUNK = 1 << 20
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Entry:
    key: str
    size: int


class Store(Protocol):
    #: the target's name and where it points (no credentials)
    name: str
    where: str

    async def put_file(self, local: Path, key: str) -> None: ...
    async def get_file(self, key: str, local: Path) -> None: ...
    async def put_bytes(self, key: str, data: bytes) -> None: ...
    async def get_bytes(self, key: str) -> bytes | None: ...
    async def list(self) -> list[Entry]: ...
    async def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None:
        """The object as a file on this machine, when the target is a directory here (else None)."""


class _Meter:
    """Reports a transfer's progress every 32 MiB (to the running step's progress line)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.shown = 0
        self.began = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        if self.done - self.shown >= 32 * CHUNK:
            self.shown = self.done
            progress.report(progress.transfer(self.done, self.total, time.monotonic() - self.began))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class DirStore:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.where = str(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    async def put_file(self, local: Path, key: str) -> None:
        await asyncio.to_thread(self._copy_in, local, self._path(key))

    def _copy_in(self, local: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = dest.with_name(dest.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out, local.open("rb") as src:
                meter = _Meter(os.fstat(src.fileno()).st_size)
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    meter.add(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        fsync_dir(dest.parent)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    async def get_file(self, key: str, local: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise BackupError(f"{key} is not in target {self.name} ({self.where})")
        await asyncio.to_thread(shutil.copyfile, src, local)

    async def put_bytes(self, key: str, data: bytes) -> None:
        from etcdforge.fsutil import atomic_write

        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(atomic_write, dest, data, 0o600)

    async def get_bytes(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None

    async def list(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        return [
            Entry(p.name, p.stat().st_size)
            for p in sorted(self.root.iterdir())
            if p.is_file() and not p.name.endswith(".part") and not p.name.startswith(".")
        ]

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class ObjectStore:
    """S3 through obstore (which also serves GCS and Azure with the same calls)."""

    def __init__(self, name: str, where: str, store: Any) -> None:
        self.name = name
        self.where = where
        self._store = store

    def _fail(self, what: str, key: str, exc: BaseException) -> BackupError:
        text = str(exc)
        if "NoSuchBucket" in text:
            return BackupError(
                f"target {self.name} ({self.where}): the bucket does not exist", hint="create it first"
            )
        if "AccessDenied" in text or "SignatureDoesNotMatch" in text or "InvalidAccessKeyId" in text:
            return BackupError(
                f"target {self.name} ({self.where}): the credentials were refused",
                hint="check credentials_file or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            )
        return BackupError(f"target {self.name} ({self.where}): {what} {key}: {_first_line(exc)}")

    def local_path(self, key: str) -> Path | None:
        return None

    async def put_file(self, local: Path, key: str) -> None:
        import obstore

        meter = _Meter(local.stat().st_size)

        async def chunks() -> AsyncIterator[bytes]:
            with local.open("rb") as src:
                while chunk := await asyncio.to_thread(src.read, 8 * CHUNK):
                    meter.add(len(chunk))
                    yield chunk

        try:
            await obstore.put_async(self._store, key, chunks(), chunk_size=8 * CHUNK, max_concurrency=4)
        except Exception as exc:
            raise self._fail("cannot upload", key, exc) from None

    async def get_file(self, key: str, local: Path) -> None:
        import obstore

        try:
            result = await obstore.get_async(self._store, key)
            total, done, began, shown = int(result.meta["size"]), 0, time.monotonic(), 0
            with local.open("wb") as out:
                async for chunk in result.stream(min_chunk_size=CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if done - shown >= 32 * CHUNK:
                        shown = done
                        progress.report(progress.transfer(done, total, time.monotonic() - began))
        except FileNotFoundError:
            raise BackupError(f"{key} is not in target {self.name} ({self.where})") from None
        except Exception as exc:
            raise self._fail("cannot download", key, exc) from None

    async def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        try:
            await obstore.put_async(self._store, key, data)
        except Exception as exc:
            raise self._fail("cannot upload", key, exc) from None

    async def get_bytes(self, key: str) -> bytes | None:
        import obstore

        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail("cannot download", key, exc) from None

    async def list(self) -> list[Entry]:
        import obstore

        try:
            out: list[Entry] = []
            async for page in obstore.list(self._store):
                out += [Entry(str(m["path"]), int(m["size"])) for m in page]
        except Exception as exc:
            raise self._fail("cannot list", "", exc) from None
        return sorted((e for e in out if "/" not in e.key), key=lambda e: e.key)

    async def delete(self, key: str) -> None:
        import obstore

        try:
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail("cannot delete", key, exc) from None


def s3_credentials(target: S3Target, ws: Workspace) -> dict[str, str]:
    """The S3 credentials: ``credentials_file`` (``KEY=value`` lines) if set, else the environment."""
    values: dict[str, str] = {}
    if target.credentials_file:
        path = resolve_path(ws, target.credentials_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise BackupError(f"target {target.name}: cannot read {path}: {exc.strerror}") from None
        for line in text.splitlines():
            key, sep, value = line.strip().removeprefix("export ").partition("=")
            if sep and key.strip() in S3_ENV:
                values[key.strip()] = value.strip().strip("'\"")
    else:
        values = {k: os.environ[k] for k in S3_ENV if os.environ.get(k)}
    missing = [k for k in S3_ENV[:2] if not values.get(k)]
    if missing:
        where = target.credentials_file or "the environment"
        raise BackupError(f"target {target.name}: {' and '.join(missing)} not set in {where}")
    return values


def _s3(target: S3Target, spec: ClusterSpec, ws: Workspace) -> ObjectStore:
    from obstore.store import S3Store

    creds = s3_credentials(target, ws)
    prefix = "/".join(p for p in (target.prefix.strip("/"), spec.name) if p)
    config: dict[str, Any] = {
        "access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
        "region": target.region,
        "virtual_hosted_style_request": False,
    }
    if creds.get("AWS_SESSION_TOKEN"):
        config["session_token"] = creds["AWS_SESSION_TOKEN"]
    if target.endpoint:
        config["endpoint"] = target.endpoint
    store = S3Store(
        target.bucket,
        prefix=prefix,
        config=cast("S3Config", config),
        client_options={
            "allow_http": bool(target.endpoint and target.endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=10),
        },
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=60)},
    )
    where = f"s3://{target.bucket}/{prefix}" + (f" at {target.endpoint}" if target.endpoint else "")
    return ObjectStore(target.name, where, store)


class SftpStore:
    def __init__(self, name: str, where: str, sftp: Any, root: str) -> None:
        self.name = name
        self.where = where
        self._sftp = sftp
        self._root = root

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def _fail(self, what: str, key: str, exc: BaseException) -> BackupError:
        return BackupError(f"target {self.name} ({self.where}): {what} {key}: {_first_line(exc)}")

    def local_path(self, key: str) -> Path | None:
        return None

    async def put_file(self, local: Path, key: str) -> None:
        part = self._path(key) + ".part"
        try:
            await self._sftp.makedirs(self._root, exist_ok=True)
            # created 0600 (never readable by others, not even while it is written), a chunk at a time
            async with self._sftp.open(part, "wb", attrs=self._attrs()) as out:
                with local.open("rb") as src:
                    meter = _Meter(os.fstat(src.fileno()).st_size)
                    while chunk := await asyncio.to_thread(src.read, CHUNK):
                        await out.write(chunk)
                        meter.add(len(chunk))
            await self._sftp.posix_rename(part, self._path(key))
        except Exception as exc:
            raise self._fail("cannot upload", key, exc) from None

    async def get_file(self, key: str, local: Path) -> None:
        from etcdforge.hosts.sshlib import asyncssh

        try:
            await self._sftp.get(self._path(key), str(local), block_size=256 * 1024)
        except asyncssh.SFTPNoSuchFile:
            raise BackupError(f"{key} is not in target {self.name} ({self.where})") from None
        except Exception as exc:
            raise self._fail("cannot download", key, exc) from None

    async def put_bytes(self, key: str, data: bytes) -> None:
        part = self._path(key) + ".part"
        try:
            await self._sftp.makedirs(self._root, exist_ok=True)
            async with self._sftp.open(part, "wb", attrs=self._attrs()) as f:
                await f.write(data)
            await self._sftp.posix_rename(part, self._path(key))
        except Exception as exc:
            raise self._fail("cannot upload", key, exc) from None

    @staticmethod
    def _attrs() -> Any:
        from etcdforge.hosts.sshlib import asyncssh

        return asyncssh.SFTPAttrs(permissions=0o600)

    async def get_bytes(self, key: str) -> bytes | None:
        from etcdforge.hosts.sshlib import asyncssh

        try:
            async with self._sftp.open(self._path(key), "rb") as f:
                data: bytes = await f.read()
                return data
        except asyncssh.SFTPNoSuchFile:
            return None
        except Exception as exc:
            raise self._fail("cannot download", key, exc) from None

    async def list(self) -> list[Entry]:
        from etcdforge.hosts.sshlib import asyncssh

        try:
            names = await self._sftp.readdir(self._root)
        except asyncssh.SFTPNoSuchFile:
            return []
        except Exception as exc:
            raise self._fail("cannot list", "", exc) from None
        return sorted(
            (
                Entry(n.filename, int(n.attrs.size or 0))
                for n in names
                if n.filename not in (".", "..")
                and not n.filename.endswith(".part")
                and n.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
            ),
            key=lambda e: e.key,
        )

    async def delete(self, key: str) -> None:
        from etcdforge.hosts.sshlib import asyncssh

        try:
            await self._sftp.remove(self._path(key))
        except asyncssh.SFTPNoSuchFile:
            return
        except Exception as exc:
            raise self._fail("cannot delete", key, exc) from None


@contextlib.asynccontextmanager
async def open_store(
    spec: ClusterSpec, ws: Workspace, target: DirTarget | S3Target | SftpTarget
) -> AsyncIterator[Store]:
    """The store of ``target`` (connected for SFTP; closed on exit)."""
    if isinstance(target, DirTarget):
        yield DirStore(target.name, resolve_path(ws, target.path) / spec.name)
        return
    if isinstance(target, S3Target):
        yield _s3(target, spec, ws)
        return
    from etcdforge.hosts.ssh import SshTarget, connect

    identity = target.identity_file or spec.ssh.identity_file
    host = await connect(
        f"backup target {target.name}",
        SshTarget(
            host=target.host,
            port=target.port,
            user=target.user,
            identity_file=resolve_path(ws, identity) if identity else None,
        ),
        known_hosts=resolve_path(ws, spec.ssh.known_hosts),
    )
    root = f"{target.path.rstrip('/')}/{spec.name}"
    try:
        async with host.sftp() as sftp:
            yield SftpStore(
                target.name, f"sftp://{target.user}@{target.host}:{target.port}{root}", sftp, root
            )
    finally:
        await host.close()
