"""Packing a snapshot for storage and unpacking it: zstd, then optionally age encryption.

Role: ``pack`` turns a checked snapshot into the stored file (``.zst`` or ``.zst.age``) and ``unpack``
turns a stored file back into the snapshot, both streaming (a chunk at a time, never the whole file in
memory) and both returning the SHA-256 of what they wrote or read, so the caller checks it against the
manifest. The stored file is what the standard tools read: ``age -d -i KEY FILE | zstd -d``.

Invariants: output goes to ``<dest>.part`` (0600) and is renamed into place only when complete and
fsync-ed; identities (private keys) are read from files and never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

from etcdforge.errors import BackupError

CHUNK = 1 << 20
ZSTD_LEVEL = 3


class _HashingWriter:
    """A write-only file object that hashes what passes through to ``inner``."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


class _SnapshotWriter:
    """A write-only file object that passes bytes to ``inner`` and hashes them as an etcd snapshot: the
    database (all but the last 32 bytes) and the whole file, each byte hashed once."""

    TRAILER = 32

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.body = hashlib.sha256()
        self.tail = b""

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        if len(data) >= self.TRAILER:
            self.body.update(self.tail)
            self.body.update(memoryview(data)[: -self.TRAILER])
            self.tail = bytes(data[-self.TRAILER :])
        else:
            joined = self.tail + bytes(data)
            self.body.update(joined[: -self.TRAILER])
            self.tail = joined[-self.TRAILER :]
        return len(data)

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def trailer_ok(self) -> bool:
        return len(self.tail) == self.TRAILER and self.body.digest() == self.tail

    def whole(self) -> str:
        digest = self.body.copy()
        digest.update(self.tail)
        return digest.hexdigest()


class _HashingReader:
    """A read-only file object that hashes what is read from ``inner``."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(CHUNK if n is None or n < 0 else n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def recipients_from(values: Sequence[str], base: Path) -> list[Any]:
    """age recipients from ``age1…`` strings or files of them (one a line, ``#`` comments; relative
    paths from ``base``)."""
    from pyrage import x25519

    out: list[Any] = []
    for value in values:
        lines = [value]
        if not value.startswith("age1"):
            path = Path(value).expanduser()
            path = path if path.is_absolute() else base / path
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise BackupError(f"cannot read age recipients file {path}: {exc.strerror}") from None
        for line in (ln.strip() for ln in lines):
            if not line or line.startswith("#"):
                continue
            try:
                out.append(x25519.Recipient.from_str(line))
            except Exception:  # pyrage raises its own RecipientError/ValueError
                raise BackupError(f"not an age X25519 recipient: {line[:16]}…") from None
    if values and not out:
        raise BackupError("encryption is configured but no age recipient was found")
    return out


def identities_from(paths: Sequence[Path]) -> list[Any]:
    """age identities (``AGE-SECRET-KEY-1…`` lines, as ``age-keygen`` writes them) from files."""
    from pyrage import x25519

    out: list[Any] = []
    for path in paths:
        try:
            text = path.expanduser().read_text()
        except OSError as exc:
            raise BackupError(f"cannot read age identity file {path}: {exc.strerror}") from None
        for line in (ln.strip() for ln in text.splitlines()):
            if line.startswith("AGE-SECRET-KEY-"):
                try:
                    out.append(x25519.Identity.from_str(line))
                except Exception:
                    raise BackupError(f"{path}: an invalid age identity") from None
    if not out:
        raise BackupError("no age identity found in " + ", ".join(str(p) for p in paths))
    return out


def _finish(part: Path, dest: Path, f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(part, dest)


def _open_part(dest: Path) -> tuple[Path, IO[bytes]]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    return part, os.fdopen(fd, "wb")


def pack(
    source: Path, dest: Path, recipients: Sequence[Any] = (), level: int = ZSTD_LEVEL
) -> tuple[int, str]:
    """Compress ``source`` with zstd (and encrypt to ``recipients``, if any) into ``dest``; return the
    stored size and SHA-256."""
    import zstandard

    part, out = _open_part(dest)
    try:
        hashed = _HashingWriter(out)
        cctx = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
        with source.open("rb") as raw:
            if recipients:
                import pyrage

                with cctx.stream_reader(raw, size=source.stat().st_size, read_size=CHUNK) as compressed:
                    pyrage.encrypt_io(compressed, hashed, list(recipients))
            else:
                cctx.copy_stream(
                    raw,
                    cast("IO[bytes]", hashed),
                    size=source.stat().st_size,
                    read_size=CHUNK,
                    write_size=CHUNK,
                )
        _finish(part, dest, out)
    except BaseException:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    return hashed.size, hashed.digest.hexdigest()


def unpack(source: Path, dest: Path, identities: Sequence[Any] = (), *, encrypted: bool) -> str:
    """Decrypt (``encrypted``: with ``identities``) and decompress ``source`` into ``dest``; return the
    SHA-256 of ``source`` as read (the stored file's hash, for the manifest check)."""
    return unpack_snapshot(source, dest, identities, encrypted=encrypted)[0]


def unpack_snapshot(
    source: Path, dest: Path, identities: Sequence[Any] = (), *, encrypted: bool
) -> tuple[str, str, bool]:
    """:func:`unpack`, also hashing what it writes as an etcd snapshot on the way: (the stored file's
    SHA-256, the snapshot's SHA-256, whether etcd's trailer matches) — no second read of either file."""
    import zstandard

    if encrypted and not identities:
        raise BackupError("this backup is encrypted: give the age identity that decrypts it (--identity)")
    part, out = _open_part(dest)
    written = _SnapshotWriter(out)
    try:
        with source.open("rb") as stored:
            hashed = _HashingReader(stored)
            dctx = zstandard.ZstdDecompressor()
            target = cast("IO[bytes]", written)
            if encrypted:
                import pyrage

                plain_part = dest.with_name(dest.name + ".zst.part")
                try:
                    with plain_part.open("wb") as plain:
                        pyrage.decrypt_io(hashed, plain, list(identities))
                    with plain_part.open("rb") as plain_in:
                        dctx.copy_stream(plain_in, target, read_size=CHUNK, write_size=CHUNK)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        plain_part.unlink()
            else:
                dctx.copy_stream(cast("IO[bytes]", hashed), target, read_size=CHUNK, write_size=CHUNK)
            while hashed.read(CHUNK):  # anything past the end still counts for the file's hash
                pass
        _finish(part, dest, out)
    except BaseException as exc:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        if isinstance(exc, Exception) and not isinstance(exc, BackupError | OSError):
            raise BackupError(f"{source.name}: cannot decrypt or decompress: {exc}") from exc
        raise
    return hashed.digest.hexdigest(), written.whole(), written.trailer_ok
