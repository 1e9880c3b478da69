"""The pytest plugin for application developers (entry point ``pytest11``), run with ``pytester`` in
its own pytest sessions against real etcd: a confined client per test, the options, and no etcd left
behind after a session is interrupted (SIGTERM) or killed outright (SIGKILL: the next session sweeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from etcd_binaries import candidates, require
from support import etcd_processes

pytestmark = pytest.mark.integration
pytest_plugins = ["pytester"]

APP_TESTS = """
import asyncio

import pytest

from etcdforge.etcd import EtcdServerError

SEEN = []


def test_own_prefix(etcd_cluster, etcd_client):
    assert len(etcd_cluster.endpoints) == {members}

    async def go():
        async with etcd_client.connect() as c:
            await c.put(etcd_client.key_for("a"), "1")
            assert (await c.get(etcd_client.key_for("a"))).kvs[0].value == b"1"
            with pytest.raises(EtcdServerError) as e:
                await c.put("/elsewhere", "1")
            assert e.value.reason == "permission_denied"

    asyncio.run(go())
    SEEN.append(etcd_client.prefix)


def test_fresh_prefix_each_test(etcd_client):
    async def go():
        async with etcd_client.connect() as c:
            assert (await c.get(etcd_client.prefix, prefix=True)).kvs == ()

    asyncio.run(go())
    assert etcd_client.prefix not in SEEN and etcd_client.env["ETCDCTL_CERT"] == str(etcd_client.cert)
"""

WAITER = """
import time
from pathlib import Path


def test_wait(etcd_cluster):
    Path("{marker}").write_text(str(etcd_cluster.directory))
    time.sleep(120)
"""


def etcd() -> Path:
    name, path = candidates()[0]
    return require(path, name)


def kill_all(directory: str) -> None:
    for pid in etcd_processes(directory):
        os.kill(pid, signal.SIGKILL)


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    found = [e for e in entry_points(group="pytest11") if e.name == "etcdforge"]
    assert found and found[0].value == "etcdforge.testing.pytest_plugin"


def test_each_test_gets_a_client_confined_to_a_fresh_prefix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TESTS.format(members=3))
    try:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--etcdforge-members", "3", "--etcdforge-etcd", str(etcd()),
            timeout=180,
        )  # fmt: skip
        result.assert_outcomes(passed=2)
    finally:
        leftover = etcd_processes(str(pytester.path))
        kill_all(str(pytester.path))
    assert not leftover, "the session left etcd running"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_an_interrupted_session_leaves_no_etcd_behind(pytester: pytest.Pytester, how: str) -> None:
    marker = pytester.path / "cluster-dir"
    pytester.makepyfile(test_wait=WAITER.format(marker=marker))
    env = {**os.environ, "TMPDIR": str(pytester.path)}  # its own registry of sessions
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--etcdforge-etcd", str(etcd())]
    try:
        session = subprocess.Popen([*argv, "test_wait.py"], cwd=pytester.path, env=env)
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and session.poll() is None:
            time.sleep(0.1)
        directory = marker.read_text()
        assert etcd_processes(directory), "the cluster did not start"
        session.send_signal(getattr(signal, how))
        session.wait(timeout=60)
        if how == "SIGKILL":  # nothing could run: the next session stops them first
            assert etcd_processes(directory)
            pytester.makepyfile(test_next="def test_next(etcd_cluster):\n    pass\n")
            nxt = subprocess.run(
                [*argv, "test_next.py"], cwd=pytester.path, env=env, timeout=180, check=False
            )
            assert nxt.returncode == 0
        assert not etcd_processes(directory), f"etcd left running after {how}"
        assert not Path(directory).exists()
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        kill_all(str(pytester.path))
