"""Interop tests run the real cfssl/openssl binaries.

They skip with a reason when a binary is missing, unless ETCDFORGE_REQUIRE_INTEROP=1, in which
case a missing binary is a failure (CI must not pass by skipping).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[bytes]]


def _need(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    msg = f"interop binaries not installed: {', '.join(missing)} (apt-get install golang-cfssl openssl)"
    if os.environ.get("ETCDFORGE_REQUIRE_INTEROP") == "1":
        pytest.fail(msg + "; ETCDFORGE_REQUIRE_INTEROP=1 forbids skipping")
    pytest.skip(msg)


@pytest.fixture
def run() -> Run:
    """Run an argv list; fail the test with stderr when it exits non-zero."""
    _need("cfssl", "cfssljson", "cfssl-certinfo", "openssl")

    def _run(argv: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            pytest.fail(f"{argv} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
        return proc

    return _run
