"""``etcdforge pki check`` against a real one-member local cluster: exit codes a monitor can rely on."""

from __future__ import annotations

import json
import os
from pathlib import Path

from etcd_binaries import one_version
from support import run_cli

from etcdforge.workspace import Workspace


@one_version()
def test_pki_check_on_a_running_cluster(workspace: Path, etcd_bin: Path) -> None:
    run_cli("up", "--dir", str(workspace), "--members", "1", "--etcd-bin", str(etcd_bin))

    ok = run_cli("pki", "check", "--dir", str(workspace), check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 broken" in ok.stdout

    doc = json.loads(run_cli("pki", "check", "--dir", str(workspace), "-o", "json").stdout)
    assert doc["status"] == "ok" and doc["exit_code"] == 0
    checks = {(f["subject"], f["check"]) for f in doc["findings"]}
    assert ("etcd1:server", "key-mode") in checks
    assert ("etcd1", "ca-key-absent") in checks

    # A warning window longer than the certificates' life: exit 1, the cluster itself is untouched.
    warn = run_cli("pki", "check", "--dir", str(workspace), "--warn-days", "4000", check=False)
    assert warn.returncode == 1, warn.stdout + warn.stderr

    key = Workspace(workspace).member_paths("etcd1").server_key
    os.chmod(key, 0o644)
    try:
        bad = run_cli("pki", "check", "--dir", str(workspace), check=False)
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert "server-key.pem" in bad.stdout
        doc = json.loads(run_cli("pki", "check", "--dir", str(workspace), "-o", "json", check=False).stdout)
        (finding,) = [f for f in doc["findings"] if f["severity"] != "ok"]
        assert finding["subject"] == "etcd1:server" and finding["check"] == "key-mode"
        assert key in finding["message"]
    finally:
        os.chmod(key, 0o600)
