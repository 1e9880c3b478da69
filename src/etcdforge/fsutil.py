"""Atomic, mode-correct file writes on the control machine.

Invariant: a reader sees either the old file or the complete new one, never a partial write; the
file's mode is set when the temp file is created (``os.open(..., mode)``), never chmod-ed afterwards
from a more open mode, so a key is never readable by others, not even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, uid: int = -1, gid: int = -1) -> None:
    """Write ``data`` to ``path`` atomically with permission bits ``mode`` (and owner ``uid``/``gid``).

    Temp file in the same directory (unique per call, so concurrent writers never share one), mode and
    owner set on the temp file before the rename, fsync, rename, fsync the directory. On any failure the
    temp file is removed and the old ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o777)
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        # umask may have narrowed the mode, and chown clears set-id bits: make it exactly ``mode``.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync directory ``path`` (a rename in it is then durable)."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) if missing, as ``mkdir -p -m MODE`` does: the leaf is created with
    ``mode`` (never more open, not even for a moment); an existing directory is left as it is."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        if path.is_dir():
            return  # made meanwhile by someone else: theirs, left as it is
        raise
    os.chmod(path, mode)  # the umask may have taken bits away from a directory only we have seen


def read_optional(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def default_workspace_dir() -> Path:
    """``$ETCDFORGE_DIR``, else ``$XDG_DATA_HOME/etcdforge/local`` (``~/.local/share`` by default)."""
    env = os.environ.get("ETCDFORGE_DIR")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "etcdforge" / "local"
