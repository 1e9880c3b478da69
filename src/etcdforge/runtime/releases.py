"""Official etcd release tarballs: download once to the control machine's cache, verify, unpack.

The cache is keyed by the tarball's sha256 (``CACHE/<sha256>/etcd``…), so a verified release is never
downloaded twice and a tampered download never lands in the cache: the bytes are hashed before anything
is unpacked, and the directory appears atomically (rename) only when complete.

Only ``etcd``, ``etcdctl`` and ``etcdutl`` are taken from the archive, by base name, so a malicious
archive cannot write outside the cache (no path from the archive is ever used).

Trusted on every use, not once: the unpacked directory holds a manifest (``MANIFEST.json``: each tool's
sha256, written before the directory appears), and every use checks the files against it — a binary
changed in the cache after its download was verified is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from etcdforge.errors import BinaryError

TOOLS = ("etcd", "etcdctl", "etcdutl")
MANIFEST = "MANIFEST.json"
MAX_TARBALL_BYTES = 512 * 1024 * 1024


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "etcdforge" / "releases"


def release_url(template: str, version: str) -> str:
    return template.replace("{version}", version)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(path: Path) -> dict[str, str]:
    """The tools of the unpacked release at ``path`` and their sha256, checked against its manifest
    now; a tool that differs (or a missing manifest) is a :class:`BinaryError`."""
    try:
        recorded = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BinaryError(
            f"{path} has no readable {MANIFEST}: its binaries cannot be trusted",
            hint=f"delete {path}; the next apply downloads and verifies the release again",
        ) from None
    if not isinstance(recorded, dict) or "etcd" not in recorded:
        raise BinaryError(f"{path / MANIFEST} is not a manifest of an etcd release", hint=f"delete {path}")
    for tool, want in recorded.items():
        if tool not in TOOLS or not isinstance(want, str):
            raise BinaryError(f"{path / MANIFEST} names {tool!r}", hint=f"delete {path}")
        try:
            got = file_sha256(path / tool)
        except OSError:
            got = "(missing)"
        if got != want:
            raise BinaryError(
                f"{path / tool} changed after its release was verified (sha256 {got[:12]}…, "
                f"the manifest says {want[:12]}…)",
                hint=f"delete {path}; the next apply downloads and verifies the release again",
            )
    return {str(k): str(v) for k, v in recorded.items()}


def check_version(etcd: Path, version: str) -> None:
    """The binary reports ``version`` (``etcd --version``): a release is what the spec names."""
    from etcdforge import binaries

    found = binaries.probe(etcd)
    if found.version_str != version:
        raise BinaryError(
            f"{etcd} reports etcd {found.version_str}, but the spec asks for {version}",
            hint="check etcd.version, etcd.sha256 and etcd.download_url",
        )


def cached(sha256: str, cache_dir: Path) -> Path | None:
    """The directory holding the unpacked release, if it is in the cache (see :func:`manifest` for the
    check of its files, made on every use)."""
    path = cache_dir / sha256
    return path if (path / MANIFEST).is_file() else None


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
    digests = {name: file_sha256(dest / name) for name in sorted(found)}
    (dest / MANIFEST).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def fetch(url: str, sha256: str, cache_dir: Path, version: str | None = None) -> Path:
    """Download ``url`` unless cached, verify ``sha256``, unpack (with a manifest), check that its etcd
    reports ``version``; return the directory with the tools."""
    hit = cached(sha256, cache_dir)
    if hit is not None:
        manifest(hit)  # a cached release is checked on every use
        if version is not None:
            check_version(hit / "etcd", version)
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
        if final.exists() and cached(sha256, cache_dir) is None:
            shutil.rmtree(final)  # unpacked by an etcdforge that kept no manifest: replaced
        try:
            tmp.rename(final)
        except OSError:
            if cached(sha256, cache_dir) is None:  # not a concurrent run that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest(cache_dir / sha256)
    if version is not None:
        check_version(cache_dir / sha256 / "etcd", version)
    return cache_dir / sha256
