"""An etcd snapshot file on the control machine: streamed to disk, checked, and read back.

Role: write the Snapshot RPC's stream to ``<dest>.part`` (fsync, rename), checking etcd's SHA-256 trailer
on the way, and check a file's structure as a bbolt database (both meta pages, and every page reachable
from the root: in range, of the right kind, reached once).

Invariants:

- Memory stays flat: a chunk at a time is held; the file is never read whole.
- A file is only ever renamed into place after its trailer matched and it was fsync-ed: ``<dest>`` exists
  only as a complete, trailer-checked snapshot. On any failure the ``.part`` file is removed.
- :func:`check_bbolt` reads the reachable pages with ``pread`` (never ``mmap``: memory stays flat) and
  looks only at page headers and branch/bucket entries, never the values.

Facts (wire and file formats): the stream is the bbolt file followed by the 32-byte SHA-256 of it
(etcd's ``snapshot save`` checks only ``size % 512 == 32``; restore checks the hash). A bbolt page starts
with ``id u64, flags u16, count u16, overflow u32``; pages 0 and 1 are meta pages holding
``magic 0xED0CDAED, version 2, page size, flags, root bucket (pgid, sequence), freelist pgid,
high-water pgid, txid`` and an FNV-1a 64 checksum of those 64 bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from etcdforge import progress
from etcdforge.errors import BackupError
from etcdforge.fsutil import atomic_write, fsync_dir

TRAILER = 32
_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQ")  # magic, version, page size, flags, root, sequence, freelist, pgid, txid
_BRANCH_ELEM = struct.Struct("<IIQ")  # pos, ksize, pgid
_LEAF_ELEM = struct.Struct("<IIII")  # flags, pos, ksize, vsize
_BUCKET = struct.Struct("<QQ")  # root pgid, sequence
MAGIC = 0xED0CDAED
BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
BUCKET_LEAF = 0x01
NO_FREELIST = 0xFFFFFFFFFFFFFFFF
CHUNK = 1 << 20
PROGRESS_EVERY = 32 << 20


@dataclass(frozen=True)
class SnapshotFile:
    """A snapshot on disk whose trailer matched: its size (trailer included) and the SHA-256 of the file."""

    path: Path
    size: int
    sha256: str


async def write_stream(chunks: AsyncIterator[bytes], dest: Path, expected: int = 0) -> SnapshotFile:
    """Stream ``chunks`` to ``dest`` via ``dest.part`` (0600), checking etcd's trailer; fsync, rename.
    Progress (of ``expected`` bytes, when known) is reported every few dozen MiB."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    body = hashlib.sha256()  # of the database (everything before the trailer): each byte hashed once
    tail = b""  # the last TRAILER bytes seen, not yet known to be database bytes
    size = 0
    began, shown = time.monotonic(), 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            _write_all(fd, chunk)
            size += len(chunk)
            if len(chunk) >= TRAILER:
                body.update(tail)
                body.update(memoryview(chunk)[:-TRAILER])
                tail = chunk[-TRAILER:]
            else:
                joined = tail + chunk
                body.update(joined[:-TRAILER])
                tail = joined[-TRAILER:]
            if size - shown >= PROGRESS_EVERY:
                shown = size
                progress.report(progress.transfer(size, expected, time.monotonic() - began))
        if size < TRAILER + 1024:
            raise BackupError(f"the snapshot stream ended after {size} bytes: too short to be a database")
        if body.digest() != tail:
            raise BackupError(
                "the snapshot's SHA-256 trailer does not match its contents (corrupted in transfer)"
            )
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    os.close(fd)
    whole = body.copy()  # the file's hash: the database's, continued over the trailer
    whole.update(tail)
    # the file's hash goes beside it first: a snapshot that exists has its hash (no second read)
    atomic_write(dest.with_name(dest.name + ".sha256"), whole.hexdigest().encode() + b"\n", 0o600)
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return SnapshotFile(dest, size, whole.hexdigest())


def recorded_sha256(path: Path) -> str | None:
    """The hash :func:`write_stream` recorded beside ``path`` (None: not written by it)."""
    try:
        text = path.with_name(path.name + ".sha256").read_text().strip()
    except OSError:
        return None
    return text if len(text) == 64 else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def check_trailer(path: Path) -> str:
    """Check ``path``'s SHA-256 trailer (a chunk at a time); return the SHA-256 of the whole file."""
    size = path.stat().st_size
    if size <= TRAILER:
        raise BackupError(f"{path.name}: {size} bytes is too short to be a snapshot")
    body = hashlib.sha256()
    whole = hashlib.sha256()
    left = size - TRAILER
    with path.open("rb") as f:
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise BackupError(f"{path.name} shrank while it was read")
            body.update(chunk)
            whole.update(chunk)
            left -= len(chunk)
        trailer = f.read(TRAILER)
    whole.update(trailer)
    if body.digest() != trailer:
        raise BackupError(f"{path.name}: the SHA-256 trailer does not match the database (corrupted)")
    return whole.hexdigest()


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class BboltInfo:
    """What the structural check found: page size, pages in use (high-water mark), txid, pages walked."""

    page_size: int
    high_water: int
    txid: int
    pages_walked: int


class _Pages:
    """Pages of a bbolt file read with ``pread`` (not ``mmap``: the walk touches every page, and mapped
    pages would count as the process's memory)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._cache: tuple[int, bytes] = (-1, b"")

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self.size:
            return b""
        return os.pread(self.fd, length, offset)

    def page(self, offset: int, page_size: int) -> bytes:
        if self._cache[0] != offset:
            self._cache = (offset, self.read(offset, page_size))
        return self._cache[1]


def _meta(pages: _Pages, offset: int) -> tuple[int, int, int, int, int] | None:
    """(page size, root, freelist, high water, txid) of the meta page at ``offset``; None if invalid."""
    raw = pages.read(offset, _PAGE_HEADER.size + _META.size + 8)
    if len(raw) < _PAGE_HEADER.size + _META.size + 8:
        return None
    _, flags, _, _ = _PAGE_HEADER.unpack_from(raw, 0)
    start = _PAGE_HEADER.size
    magic, version, page_size, _, root, _, freelist, pgid, txid = _META.unpack_from(raw, start)
    (checksum,) = struct.unpack_from("<Q", raw, start + _META.size)
    if flags != META or magic != MAGIC or version != 2:
        return None
    if _fnv1a64(raw[start : start + _META.size]) != checksum:
        return None
    return page_size, root, freelist, pgid, txid


def check_bbolt(path: Path, *, trailer: bool = True) -> BboltInfo:
    """Check ``path`` as a bbolt database (``trailer``: followed by etcd's 32-byte hash); raise
    :class:`BackupError` naming the first problem."""
    name = path.name
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size - (TRAILER if trailer else 0)
        if size < 4 * 1024:
            raise BackupError(f"{name}: {size} bytes is too small to be a bbolt database")
        pages = _Pages(f.fileno(), size)
        first = _meta(pages, 0)
        # bbolt reads the page size from meta page 0; when that page is damaged it tries meta page 1
        # at the common page size (4096), as we do
        page_size = first[0] if first is not None else 4096
        if page_size < 512 or page_size & (page_size - 1) or page_size > 1 << 20:
            raise BackupError(f"{name}: implausible page size {page_size}")
        metas = [m for m in (first, _meta(pages, page_size)) if m is not None and m[0] == page_size]
        if not metas:
            raise BackupError(f"{name}: not a bbolt database (no valid meta page)")
        # bbolt uses the valid meta with the higher txid
        _, root, freelist, high_water, txid = max(metas, key=lambda m: m[4])
        if high_water * page_size > size:
            raise BackupError(
                f"{name}: truncated: {high_water} pages of {page_size} bytes in use, "
                f"the file holds {size // page_size}"
            )
        walked = _walk(pages, page_size, root, freelist, high_water, name)
    return BboltInfo(page_size, high_water, txid, walked)


def _walk(pages: _Pages, page_size: int, root: int, freelist: int, high_water: int, name: str) -> int:
    """Walk every page reachable from the root bucket; return how many were visited."""
    seen: set[int] = set()

    def claim(pgid: int, want: int, parent: str) -> tuple[bytes, int, int, int]:
        if not 2 <= pgid < high_water:
            raise BackupError(f"{name}: {parent} points at page {pgid}, outside 2..{high_water - 1}")
        head = pages.page(pgid * page_size, page_size)
        page_id, flags, count, overflow = _PAGE_HEADER.unpack_from(head, 0)
        if page_id != pgid:
            raise BackupError(f"{name}: page {pgid} is labelled {page_id} (corrupted)")
        if not flags & want:
            raise BackupError(f"{name}: page {pgid} has flags {flags:#x}, expected {want:#x} ({parent})")
        if pgid + overflow >= high_water:
            raise BackupError(f"{name}: page {pgid} overflows past the end of the database")
        for p in range(pgid, pgid + overflow + 1):
            if p in seen:
                raise BackupError(f"{name}: page {p} is reachable twice (corrupted)")
            seen.add(p)
        return head, flags, count, overflow

    def more(pgid: int, overflow: int, data: bytes, end: int) -> bytes:
        """``data`` extended into the page's overflow pages to ``end`` (element headers or a bucket value
        past the first page; values themselves are never read)."""
        if end <= len(data):
            return data
        if end > (overflow + 1) * page_size:
            raise BackupError(f"{name}: page {pgid}'s elements run past its end (corrupted)")
        return pages.read(pgid * page_size, end)

    if freelist != NO_FREELIST:  # etcd runs bbolt without a stored freelist (NoFreelistSync)
        claim(freelist, FREELIST, "the meta page's freelist")
    stack: list[tuple[int, str]] = [(root, "the root bucket")]
    while stack:
        pgid, parent = stack.pop()
        data, flags, count, overflow = claim(pgid, BRANCH | LEAF, parent)
        base = _PAGE_HEADER.size
        size = _BRANCH_ELEM.size if flags & BRANCH else _LEAF_ELEM.size
        data = more(pgid, overflow, data, base + count * size)
        if flags & BRANCH:
            for i in range(count):
                _, _, child = _BRANCH_ELEM.unpack_from(data, base + i * _BRANCH_ELEM.size)
                stack.append((child, f"branch page {pgid}"))
            continue
        for i in range(count):
            elem = base + i * _LEAF_ELEM.size
            eflags, pos, ksize, vsize = _LEAF_ELEM.unpack_from(data, elem)
            if not eflags & BUCKET_LEAF:
                continue
            value = elem + pos + ksize
            if vsize < _BUCKET.size:
                raise BackupError(f"{name}: a bucket entry on page {pgid} is cut short")
            data = more(pgid, overflow, data, value + _BUCKET.size)
            (sub_root, _) = _BUCKET.unpack_from(data, value)
            if sub_root != 0:  # 0: an inline bucket, held in the value itself
                stack.append((sub_root, f"a bucket on page {pgid}"))
    return len(seen)
