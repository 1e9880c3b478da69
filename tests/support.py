"""Helpers shared by the test packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m etcdforge ARGS`` as a user would; return the completed process. A run past
    ``timeout`` (a hang guard, not a speed check) fails with everything it printed: the step lines carry
    each slow step's duration, so the failure shows where the time went."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "etcdforge", *args],
            capture_output=True,
            text=True,
            env=full_env,
            input=input,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(
            f"etcdforge {' '.join(args)} still running after {timeout:g} s (killed)\n"
            f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
        ) from None
    if check and proc.returncode != 0:
        raise AssertionError(
            f"etcdforge {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def stop_all_members(directory: Path) -> None:
    """Kill every member process recorded in the workspace (ours, by PID), whatever the test did, for a
    teardown or a test that throws the data away next: SIGKILL at once, all together (etcd stopping on
    SIGTERM tries to hand over leadership to members that are stopping too, which costs seconds each)."""
    from etcdforge.testing.pytest_plugin import kill_members

    kill_members(directory)


def etcd_processes(directory: Path | str) -> list[int]:
    """etcd processes whose command line names a path below ``directory`` (a killed run may have removed
    their pid files)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline and b"etcd" in cmdline:
                out.append(int(entry.name))
    return out


def require(problem: str | None, *, env: str) -> None:
    """Skip for ``problem`` (a missing part, with the reason), or fail when the variable ``env`` is 1 (CI
    sets the ``ETCDFORGE_REQUIRE_*`` variables: what must run may never be skipped silently)."""
    import pytest

    if problem is None:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{problem} ({env}=1 forbids skipping)")
    pytest.skip(problem)


def need_root(what: str) -> None:
    """Tests that need root (chown, a real sshd switching users): CI runs as root."""
    require(None if os.geteuid() == 0 else f"{what} needs root", env="ETCDFORGE_REQUIRE_ROOT")


def need_interop_binaries(*names: str) -> None:
    """Skip (or, with ETCDFORGE_REQUIRE_INTEROP=1, fail) when a real interop binary is missing."""
    import shutil

    import pytest

    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        msg = f"not installed: {', '.join(missing)} (apt-get install golang-cfssl openssl)"
        if os.environ.get("ETCDFORGE_REQUIRE_INTEROP") == "1":
            pytest.fail(msg + "; ETCDFORGE_REQUIRE_INTEROP=1 forbids skipping")
        pytest.skip(msg)


# The seed guide's cfssl inputs (shared/seed): its signing config and its CA CSR.
GUIDE_CA_CONFIG = {
    "signing": {
        "default": {"expiry": "87600h"},
        "profiles": {
            "server": {"expiry": "87600h", "usages": ["signing", "key encipherment", "server auth"]},
            "client": {"expiry": "87600h", "usages": ["signing", "key encipherment", "client auth"]},
            "etcd": {
                "expiry": "87600h",
                "usages": ["signing", "key encipherment", "server auth", "client auth"],
            },
        },
    }
}
GUIDE_CA_CSR = {
    "CN": "ETCD CA",
    "key": {"algo": "rsa", "size": 2048},
    "names": [{"C": "CN", "ST": "ShangHai", "L": "ShangHai", "O": "CA", "OU": "China"}],
}


def init_hosts_workspace(harness: object, directory: object, count: int, *extra: str) -> object:
    """``etcdforge init`` for the first ``count`` test hosts of ``harness`` (etcd1..N), with its SSH key
    and known_hosts."""
    hosts = harness.hosts[:count]  # type: ignore[attr-defined]
    members = [f"--member=etcd{i + 1}={h.address}" for i, h in enumerate(hosts)]
    run_cli(
        "init", "--dir", str(directory), *members,
        "--ssh-key", str(harness.client_key), "--known-hosts", str(harness.known_hosts), *extra,  # type: ignore[attr-defined]
    )  # fmt: skip
    return directory


def new_ca_client(ws: object, out: object) -> object:
    """A client certificate signed by the CA rotation's new CA (``pki/rotation/new-ca.pem``), as one of a
    user's own clients would get it; TLS files that trust the rotation's bundle."""
    from datetime import UTC, datetime
    from pathlib import Path

    from etcdforge import certs
    from etcdforge.etcd import TlsFiles
    from etcdforge.pki import KeyPair, issue, load_cert, load_key
    from etcdforge.spec import load_spec
    from etcdforge.workspace import Workspace

    assert isinstance(ws, Workspace) and isinstance(out, Path)
    spec = load_spec(ws.spec_path)
    req = next(r for r in certs.cert_requests(spec, base_dir=ws.root) if r.name == "admin-client")
    ca = KeyPair(load_cert(ws.rotation_dir / "new-ca.pem"), load_key(ws.rotation_dir / "new-ca-key.pem"))
    pair = issue(ca, req, datetime.now(UTC))
    out.mkdir(parents=True, exist_ok=True)
    (out / "client.pem").write_bytes(pair.cert_pem())
    (out / "client-key.pem").write_bytes(pair.key_pem())
    (out / "client-key.pem").chmod(0o600)
    return TlsFiles(ca=ws.trust_bundle, cert=out / "client.pem", key=out / "client-key.pem")


def killed_at(directory: Path, point: str, *argv: str) -> None:
    """Run ``etcdforge ARGV --dir DIRECTORY`` and SIGKILL it at the fault-injection ``point``
    (``after:STEP`` / ``during:STEP``); fail unless it was killed there."""
    import signal

    env = {**os.environ, "ETCDFORGE_FAILPOINT": point}
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *argv, "--dir", str(directory)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, (point, proc.stdout, proc.stderr)


def under_load(directory: Path, *args: str, prefix: str, pause: float = 0.005) -> tuple[str, int]:
    """Run ``etcdforge ARGS`` under a writer and a quorum monitor: returns its stdout and the most members
    that were down at once; asserts that no acknowledged write was lost and that writes went on."""
    import asyncio

    from etcdforge.testing.workload import QuorumMonitor, Writer, check_history
    from etcdforge.workspace import admin_client, load_workspace

    async def go() -> tuple[str, int]:
        ws, spec = load_workspace(directory)
        urls = [f"https://{m.address}:{spec.etcd.client_port}" for m in spec.members]
        monitor = QuorumMonitor(lambda: admin_client(spec, ws, timeout=5.0), urls)
        async with admin_client(spec, ws, timeout=2.0) as client:
            writer = Writer(client, prefix=prefix)
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(writer.run(stop, pause=pause)),
                asyncio.create_task(monitor.run(stop)),
            ]
            await asyncio.sleep(0.3)
            try:
                out = await asyncio.to_thread(run_cli, *args)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            result = await check_history(client, writer.history)
            assert result.ok and result.acknowledged > 20, result
        return out.stdout, monitor.worst

    return asyncio.run(go())


def need_promtool() -> str:
    """promtool (Debian's prometheus package) for the alert-rule tests (ETCDFORGE_REQUIRE_MONITORING)."""
    import shutil

    found = shutil.which("promtool")
    require(
        None if found else "promtool is not installed (apt-get install prometheus)",
        env="ETCDFORGE_REQUIRE_MONITORING",
    )
    assert found is not None
    return found


def peer_port_answers(url: str, ca: Path, cert: Path, key: Path) -> bool:
    """Whether a member's peer port serves this certificate: ``GET /members`` (etcd's peer API) over a
    new TLS connection presenting ``cert``. False when the handshake or the request is refused; the
    server's certificate is checked against ``ca`` (what peers trust), so only the client side decides."""
    import http.client
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/members")
        return conn.getresponse().status == 200
    except (ssl.SSLError, ConnectionError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def tls12_handshake(url: str, ca: Path, cert: Path, key: Path) -> tuple[bool, str]:
    """A TLS 1.2 handshake with the real ``openssl s_client`` presenting ``cert``: in TLS 1.2 a server that
    refuses the client certificate fails the handshake itself (in 1.3 it says so after it)."""
    import subprocess

    proc = subprocess.run(
        ["openssl", "s_client", "-connect", url.removeprefix("https://"), "-CAfile", str(ca), "-cert",
         str(cert), "-key", str(key), "-tls1_2", "-brief", "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    return proc.returncode == 0 and "CONNECTION ESTABLISHED" in text, text
