"""Official etcd release tarballs: download once to the control machine's cache, verify, unpack.

The cache is keyed by the tarball's sha256 (``CACHE/<sha256>/etcd``…), so a verified release is never
downloaded twice and a tampered download never lands in the cache: the bytes are hashed before anything
is unpacked, and the directory appears atomically (rename) only when complete.

Only ``etcd``, ``etcdctl`` and ``etcdutl`` are taken from the archive, by base name, so a malicious
archive cannot write outside the cache (no path from the archive is ever used).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from etcdforge.errors import BinaryError

TOOLS = ("etcd", "etcdctl", "etcdutl")
MAX_TARBALL_BYTES = 512 * 1024 * 1024


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "etcdforge" / "releases"


def release_url(template: str, version: str) -> str:
    return template.replace("{version}", version)


def cached(sha256: str, cache_dir: Path) -> Path | None:
    """The directory holding the unpacked, verified release, if it is in the cache."""
    path = cache_dir / sha256
    return path if (path / "etcd").is_file() else None


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data: bytes = resp.read(MAX_TARBALL_BYTES + 1)
    except OSError as exc:
        raise BinaryError(
            f"cannot download {url}: {exc}", hint="check etcd.download_url and the network"
        ) from None
    if len(data) > MAX_TARBALL_BYTES:
        raise BinaryError(f"{url} is larger than {MAX_TARBALL_BYTES // 2**20} MiB; refusing it")
    return data


def unpack(data: bytes, dest: Path) -> None:
    """Extract the etcd tools (by base name) from a release tarball into ``dest``."""
    found = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if name in TOOLS and member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        continue
                    target = dest / name
                    target.write_bytes(extracted.read())
                    target.chmod(0o755)
                    found.add(name)
    except (tarfile.TarError, OSError) as exc:
        raise BinaryError(f"the release archive cannot be read: {exc}") from None
    if "etcd" not in found:
        raise BinaryError("the release archive has no etcd binary", hint="check etcd.download_url")


def fetch(url: str, sha256: str, cache_dir: Path) -> Path:
    """Download ``url`` unless cached, verify ``sha256``, unpack; return the directory with the tools."""
    hit = cached(sha256, cache_dir)
    if hit is not None:
        return hit
    data = _download(url)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BinaryError(
            f"{url}: sha256 mismatch (got {digest}, the spec says {sha256})",
            hint="the download is corrupt or not the release you meant; nothing was installed",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_dir))
    try:
        unpack(data, tmp)
        final = cache_dir / sha256
        try:
            tmp.rename(final)
        except OSError:
            if cached(sha256, cache_dir) is None:  # not a concurrent run that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache_dir / sha256
