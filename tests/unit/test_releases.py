"""Release binaries are trusted on every use, not once (security issue, item 6): the verified download
leaves a manifest; every use checks the files against it and the binary's reported version against the
spec; an upload of a tool with no known digest is refused."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from etcdforge.errors import BinaryError, StepError
from etcdforge.executor import execute
from etcdforge.plan import Plan, Step, UploadFile
from etcdforge.runtime import releases
from etcdforge.spec import load_spec_text
from etcdforge.testing.fakes import FakeHost, fake_runtime
from etcdforge.workspace import Workspace


def tarball(tmp_path: Path, version: str = "3.4.23") -> tuple[str, str]:
    """A release in the official layout (tools that print their version), as a file:// URL + sha256."""
    top = f"etcd-v{version}-linux-amd64"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for tool in ("etcd", "etcdctl", "etcdutl"):
            data = f"#!/bin/sh\necho 'etcd Version: {version}'\necho 'Git SHA: 0'\n".encode()
            info = tarfile.TarInfo(f"{top}/{tool}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / f"{top}.tar.gz"
    path.write_bytes(buf.getvalue())
    return path.as_uri(), hashlib.sha256(buf.getvalue()).hexdigest()


def test_a_fetched_release_has_a_manifest_and_is_checked_on_every_use(tmp_path: Path) -> None:
    url, sha = tarball(tmp_path)
    cache = tmp_path / "cache"
    d = releases.fetch(url, sha, cache, "3.4.23")
    digests = releases.manifest(d)
    assert set(digests) == {"etcd", "etcdctl", "etcdutl"}
    assert digests["etcdctl"] == releases.file_sha256(d / "etcdctl")
    assert releases.fetch(url, sha, cache, "3.4.23") == d  # cached: not downloaded again
    # a tool changed in the cache after the download was verified is refused, on the next use
    (d / "etcdctl").write_bytes(b"#!/bin/sh\necho pwned\n")
    with pytest.raises(BinaryError, match="etcdctl changed after its release was verified"):
        releases.fetch(url, sha, cache, "3.4.23")
    with pytest.raises(BinaryError, match="changed after"):
        releases.manifest(d)


def test_a_wrong_digest_or_version_is_refused_and_a_cache_without_manifest_is_replaced(
    tmp_path: Path,
) -> None:
    url, sha = tarball(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(BinaryError, match="sha256 mismatch"):
        releases.fetch(url, "0" * 64, cache)
    assert not (cache / ("0" * 64)).exists()
    with pytest.raises(BinaryError, match=r"reports etcd 3\.4\.23, but the spec asks for 3\.5\.9"):
        releases.fetch(url, sha, cache, "3.5.9")
    # a directory unpacked by an etcdforge that kept no manifest is not trusted: fetched again
    legacy = tmp_path / "legacy"
    (legacy / sha).mkdir(parents=True)
    (legacy / sha / "etcd").write_bytes(b"#!/bin/sh\necho old\n")
    assert releases.cached(sha, legacy) is None
    d = releases.fetch(url, sha, legacy, "3.4.23")
    assert releases.manifest(d)["etcd"] == releases.file_sha256(d / "etcd")


def test_an_upload_is_verified_against_the_manifest_or_refused_without_a_digest(tmp_path: Path) -> None:
    url, sha = tarball(tmp_path)
    d = releases.fetch(url, sha, tmp_path / "cache", "3.4.23")
    spec = load_spec_text(
        "name: p\ntoken: t\nmode: hosts\nmembers:\n  - {name: etcd1, address: 10.213.77.1}\n"
    )
    host = FakeHost("etcd1")
    runtime, *_ = fake_runtime(spec, Workspace(tmp_path / "ws"), hosts={"etcd1": host})

    def upload(source: Path) -> Step:
        return Step(
            "etcd1/install", "etcd1", UploadFile("etcd1", str(source), "/usr/local/bin/x", 0o755, None), "r"
        )

    asyncio.run(execute(Plan("apply", (upload(d / "etcdctl"),)), runtime))
    assert host.files["/usr/local/bin/x"].data == (d / "etcdctl").read_bytes()
    (d / "etcdutl").write_bytes(b"tampered")
    loose = tmp_path / "loose" / "etcdctl"
    loose.parent.mkdir()
    loose.write_bytes(b"#!/bin/sh\n")
    for source, why in ((d / "etcdutl"), "changed after"), (loose, "has no known sha256"):
        with pytest.raises(StepError, match=why):
            asyncio.run(execute(Plan("apply", (upload(source),)), runtime))
