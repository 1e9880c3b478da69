"""`status -o json` on its quick path (stdlib only: the spec's cached status inputs and etcd's JSON gateway)
prints what the full path prints, on both etcd versions; anything it does not answer — a member down, a
spec edited since the cache was written — goes to the full path, which words it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_cli

pytestmark = pytest.mark.integration

#: fields that move between two calls on an idle cluster (a leader's heartbeats do not, proposals do)
MOVING = ("raft_index", "raft_applied_index")

PROBE = """
import json, sys
from pathlib import Path
from etcdforge import fastpath
out = fastpath.quick_status(Path(sys.argv[1]))
heavy = sorted(m for m in ("grpc", "pydantic", "click", "rich", "cryptography") if m in sys.modules)
print(json.dumps({"out": out, "heavy": heavy}))
"""


def quick(workspace: Path) -> tuple[str | None, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(workspace)], capture_output=True, text=True, timeout=30, check=True
    )
    doc = json.loads(proc.stdout)
    return doc["out"], doc["heavy"]


def steady(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k not in MOVING} for r in rows]


def test_quick_status_prints_what_the_full_path_prints(workspace: Path, etcd_bin: Path) -> None:
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    assert quick(workspace)[0] is None  # no cache yet: the full path answers, and writes it
    full = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json").stdout)
    assert (workspace / ".status-cache.json").is_file()
    out, heavy = quick(workspace)
    assert out is not None and heavy == []  # answered with the standard library only
    assert steady(json.loads(out)) == steady(full)
    # the command itself takes the quick path and prints the same
    again = run_cli("status", "-o", "json", "--dir", str(workspace)).stdout
    assert steady(json.loads(again)) == steady(full)

    # a member down: the full path answers (its error row, exit 1)
    from etcdforge.runtime import supervisor

    pid = supervisor.running_pid(workspace / "members" / "etcd3" / "etcd.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert quick(workspace)[0] is None
    down = run_cli("status", "--dir", str(workspace), "-o", "json", check=False)
    assert down.returncode == 1
    rows = json.loads(down.stdout)
    assert [r["member"] for r in rows if r["error"]] == ["etcd3"]
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    assert quick(workspace)[0] is not None

    # a spec edited since: the cache is stale until the full path runs again
    spec = workspace / "cluster.yaml"
    spec.write_text(spec.read_text() + "# edited\n")
    assert quick(workspace)[0] is None
    run_cli("status", "--dir", str(workspace), "-o", "json")
    assert quick(workspace)[0] is not None
