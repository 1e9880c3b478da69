"""The committed stubs in src/etcdforge/etcd/_gen are exactly what scripts/gen_protos.py produces.

Needs a python with the pinned grpcio-tools, named by ETCDFORGE_PROTOC_PYTHON. Without it the test is
skipped — unless ETCDFORGE_REQUIRE_PROTOC=1 (CI), where a missing tool is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "src" / "etcdforge" / "etcd" / "_gen"
SCRIPT = REPO / "scripts" / "gen_protos.py"


def _tools_python() -> str:
    python = os.environ.get("ETCDFORGE_PROTOC_PYTHON", "")
    required = os.environ.get("ETCDFORGE_REQUIRE_PROTOC") == "1"
    if not python:
        reason = "ETCDFORGE_PROTOC_PYTHON is not set (a python with grpcio-tools==1.62.3)"
        if required:
            pytest.fail(reason + " but ETCDFORGE_REQUIRE_PROTOC=1")
        pytest.skip(reason)
    if not os.access(python, os.X_OK):
        pytest.fail(f"ETCDFORGE_PROTOC_PYTHON={python} is not an executable")
    return python


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file() and p.suffix in (".py", ".pyi")
    }


def test_committed_stubs_match_regeneration(tmp_path: Path) -> None:
    python = _tools_python()
    out = tmp_path / "_gen"
    proc = subprocess.run(
        [python, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout
    committed, fresh = _files(GEN), _files(out)
    assert sorted(committed) == sorted(fresh), "generated file set differs; run scripts/gen_protos.py"
    stale = [name for name in committed if committed[name] != fresh[name]]
    assert not stale, f"stale generated files {stale}; run scripts/gen_protos.py with the pinned tools"
