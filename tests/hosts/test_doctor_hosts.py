"""`etcdforge doctor --hosts` on real SSH + systemd test hosts: what it reads on each host (config file,
journal, data dir, clock) and the findings when one host is broken for real: its clock 5 s ahead (every
command run there over SSH sees it, through libfaketime), its data dir readable by others, another heartbeat
in its etcd config, and etcd stopped there."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from support import init_hosts_workspace, require, run_cli

from etcdforge.testing.hosts import TestHosts

#: the test hosts' root is an overlay of this machine's: etcd's data dir is on overlayfs there
KNOWN = {"hosts.data-dir-fs"}
#: the hosts share this machine's kernel and limits: systemd cannot raise etcd's open files (the unit's
#: LimitNOFILE=65536) above this machine's hard limit (20000 in this sandbox), and doctor says so
HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
if HARD_NOFILE < 65536:
    KNOWN.add("hosts.open-files")


def libfaketime() -> str:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    require(
        None if found else "libfaketime is not installed (apt-get install faketime)",
        env="ETCDFORGE_REQUIRE_HOST_TESTS",
    )
    return str(found[0])


def doctor(ws: Path, *args: str) -> tuple[int, dict[str, list[dict[str, str]]]]:
    done = run_cli("doctor", "--dir", str(ws), "-o", "json", *args, check=False)
    assert done.returncode in (0, 1, 2), done.stdout + done.stderr
    rules: dict[str, list[dict[str, str]]] = {}
    for f in json.loads(done.stdout)["findings"]:
        rules.setdefault(f["rule"], []).append(f)
    return done.returncode, rules


def test_doctor_reads_the_hosts_and_finds_what_was_broken(hosts: TestHosts, tmp_path: Path) -> None:
    faketime = libfaketime()
    ws = Path(str(init_hosts_workspace(hosts, tmp_path / "prod", 3)))
    run_cli("apply", "--dir", str(ws), "--yes")
    run_cli("backup", "now", "--dir", str(ws))
    code, found = doctor(ws, "--hosts")
    assert (code, set(found)) == (1, KNOWN), found
    assert {f["evidence"] for f in found["hosts.data-dir-fs"]} == {"filesystem overlayfs"}

    # without --hosts only what etcd's API and the metrics say (over the client URL with the admin cert)
    plain = run_cli("doctor", "--dir", str(ws), check=False)
    assert "hosts were not read" in plain.stdout
    figures = json.loads(run_cli("metrics", "--dir", str(ws), "-o", "json").stdout)
    assert all(f["url"].startswith("https://") and f["figures"]["has_leader"] for f in figures), figures
    assert figures[0]["figures"]["max_fds"] == min(65536, HARD_NOFILE)  # the unit's LimitNOFILE

    # the leader stopped (SIGSTOP) past the longest election timeout: the members' journals (read over
    # SSH) show a new leader elected — one leader change, flagged with the threshold at 1
    rows = json.loads(run_cli("status", "--dir", str(ws), "-o", "json").stdout)
    lead = next(r["member"] for r in rows if r["is_leader"])
    pause = "p=$(systemctl show -p MainPID --value etcd) && kill -STOP $p && sleep 2.5 && kill -CONT $p"
    hosts.run(hosts.hosts[int(lead[-1]) - 1], ["sh", "-c", pause])
    deadline = time.monotonic() + 30  # etcd logs it, journald stores it: not at once on a loaded machine
    while True:
        code, found = doctor(ws, "--hosts", "--threshold", "leader_changes=1")
        if "leader.changes" in found or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert found["leader.changes"][0]["message"].endswith("leader changes in the last hour"), found

    h2 = hosts.hosts[1]
    conf = "/etc/etcd/etcd.conf.yml"
    # every command run over SSH on etcd2's host goes through root's ~/.bashrc: from now on, with the
    # clock 5 s ahead (etcd, started by systemd, keeps the real one)
    skew = f"cp ~/.bashrc ~/.bashrc.orig && echo 'export LD_PRELOAD={faketime} FAKETIME=+5s' >> ~/.bashrc"
    try:
        hosts.run(h2, ["sh", "-c", skew])
        hosts.run(h2, ["chmod", "0755", "/var/lib/etcd"])
        hosts.run(h2, ["sed", "-i", "s/^heartbeat-interval: 100$/heartbeat-interval: 250/", conf])
        code, found = doctor(ws, "--hosts")
        assert code == 2, found
        (clock,) = found["hosts.clock"]
        assert clock["subject"] == "etcd2" and "+5." in clock["message"], clock
        (mode,) = found["hosts.data-dir-mode"]
        assert mode["subject"] == "etcd2" and "0755" in mode["message"] and "etcdforge apply" in mode["fix"]
        (differs,) = found["configuration.differs"]
        assert "etcd2: 250" in differs["evidence"] and differs["fix"].startswith("etcdforge apply")
        assert [f["subject"] for f in found["configuration.drift"]] == ["etcd2"]

        hosts.run(h2, ["systemctl", "stop", "etcd"])
        code, found = doctor(ws, "--hosts")
        assert [f["subject"] for f in found["membership.down"]] == ["etcd2"], found
    finally:
        hosts.run(h2, ["sh", "-c", "[ -f ~/.bashrc.orig ] && mv -f ~/.bashrc.orig ~/.bashrc"], check=False)
    run_cli("apply", "--dir", str(ws), "--yes")
    code, found = doctor(ws, "--hosts")
    # the paused leader's late-heartbeat lines (when it logged them before stepping down) stay in its journal
    assert (code, set(found) - {"disk.heartbeat"}) == (1, KNOWN), found
