"""`etcdforge init/plan/apply` against real SSH + systemd test hosts (etcdforge.testing.hosts).

Each test starts from reset hosts (no etcd state). Debian's etcd 3.4.23 is in every host through the
overlay of /, so `source: system` works as on a real Debian fleet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

from support import run_cli

from etcdforge.etcd import EtcdClient, TlsFiles
from etcdforge.testing.hosts import TestHosts
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import load_workspace

ETCDCTL = "/usr/bin/etcdctl"


def init_workspace(hosts: TestHosts, directory: Path, *extra: str) -> Path:
    members = [f"--member=etcd{i + 1}={h.address}" for i, h in enumerate(hosts.hosts)]
    run_cli(
        "init", "--dir", str(directory), *members,
        "--ssh-key", str(hosts.client_key), "--known-hosts", str(hosts.known_hosts), *extra,
    )  # fmt: skip
    return directory


def plan_json(directory: Path, *extra: str) -> dict[str, object]:
    out = run_cli("plan", "--dir", str(directory), "-o", "json", *extra).stdout
    data: dict[str, object] = json.loads(out)
    return data


def step_ids(plan: dict[str, object]) -> list[str]:
    steps = plan["steps"]
    assert isinstance(steps, list)
    return [s["id"] for s in steps]


def etcdctl_env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    for line in run_cli("env", "--dir", str(directory)).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


def nothing_installed(hosts: TestHosts) -> bool:
    return all(
        hosts.run(h, ["test", "-e", "/etc/etcd/etcd.conf.yml"], check=False).returncode != 0
        for h in hosts.hosts
    )


def test_apply_from_nothing_is_secure_idempotent_and_repairs_drift(hosts: TestHosts, tmp_path: Path) -> None:
    ws = init_workspace(hosts, tmp_path / "prod")
    start = time.monotonic()
    applied = run_cli("apply", "--dir", str(ws), "--yes")
    print(f"apply from nothing on 3 hosts: {time.monotonic() - start:.1f}s")
    assert "cluster healthy" in applied.stdout
    run_cli("health", "--dir", str(ws))

    # the guide's etcdctl commands from the control machine, with `etcdforge env`
    env = etcdctl_env(ws)
    for argv in (
        ["endpoint", "health"],
        ["member", "list"],
        ["put", "/guide/foo", "bar"],
        ["get", "/guide", "--prefix"],
        ["get", "/", "--prefix", "--keys-only"],
        ["del", "/guide", "--prefix"],
    ):
        proc = subprocess.run(
            [ETCDCTL, *argv], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, (argv, proc.stderr)

    # the CA key is on no host; key files are 0600 etcd:etcd; the data dir is 0700 etcd:etcd
    ca_key_sha = hashlib.sha256((ws / "pki" / "ca-key.pem").read_bytes()).hexdigest()
    for h in hosts.hosts:
        sums = hosts.run(
            h,
            [
                "find",
                "/etc/etcd",
                "/var/lib/etcd",
                "/etc/systemd",
                "/usr/local",
                "/tmp",
                "/root/.ssh",
                "-type",
                "f",
                "-exec",
                "sha256sum",
                "{}",
                "+",
            ],
        ).stdout
        assert ca_key_sha not in sums, f"CA key found on {h.name}"
        stat = hosts.run(
            h, ["stat", "-c", "%a %U %G %n", "/etc/etcd/pki/server-key.pem", "/etc/etcd/pki/peer-key.pem",
                "/var/lib/etcd"],
        ).stdout.splitlines()  # fmt: skip
        assert stat == [
            "600 etcd etcd /etc/etcd/pki/server-key.pem",
            "600 etcd etcd /etc/etcd/pki/peer-key.pem",
            "700 etcd etcd /var/lib/etcd",
        ]
        assert hosts.run(h, ["systemctl", "is-enabled", "etcd"]).stdout.strip() == "enabled"

    # a second apply changes nothing; plan agrees, with terraform-style exit codes
    again = run_cli("apply", "--dir", str(ws), "--yes")
    assert "no changes" in again.stdout
    assert run_cli("plan", "--dir", str(ws), "--detailed-exitcode").returncode == 0

    # drift: an edited unit on etcd2, a deleted certificate on etcd1 — plan shows exactly that
    h1, h2 = hosts.hosts[0], hosts.hosts[1]
    hosts.run(h2, ["sed", "-i", "s/^RestartSec=5$/RestartSec=30/", "/etc/systemd/system/etcd.service"])
    # the plan a user confirms is the plan that runs: when a host changes between the preview and the
    # apply, the apply refuses in one line and changes nothing (etcd2's edited unit stays edited)
    from etcdforge.errors import PlanError
    from etcdforge.verbs.apply import run as deploy

    shown = asyncio.run(deploy.make_plan(ws))
    assert [s.id for s in shown.steps][:1] == ["etcd2/file:/etc/systemd/system/etcd.service"]
    hosts.run(h1, ["rm", "/etc/etcd/pki/server.pem"])
    try:
        asyncio.run(deploy.apply(ws, confirmed=shown))
        raise AssertionError("apply ran a plan other than the one confirmed")
    except PlanError as exc:
        assert "changed since the plan was shown; nothing was changed" in str(exc)
    unit = hosts.run(h2, ["cat", "/etc/systemd/system/etcd.service"]).stdout
    assert "RestartSec=30" in unit
    assert hosts.run(h1, ["test", "-e", "/etc/etcd/pki/server.pem"], check=False).returncode != 0
    drift = plan_json(ws)
    assert step_ids(drift) == [
        "etcd1/file:/etc/etcd/pki/server.pem",
        "etcd2/file:/etc/systemd/system/etcd.service",
        "etcd2/daemon-reload",
        "etcd2/enable",
        "etcd2/restart",
    ]
    unit_step = next(s for s in drift["steps"] if s["id"] == "etcd2/file:/etc/systemd/system/etcd.service")  # type: ignore[union-attr]
    assert "-RestartSec=30" in unit_step["diff"] and "+RestartSec=5" in unit_step["diff"]
    assert run_cli("plan", "--dir", str(ws), "--detailed-exitcode", check=False).returncode == 2
    run_cli("apply", "--dir", str(ws), "--yes")
    assert step_ids(plan_json(ws)) == []
    run_cli("health", "--dir", str(ws))


def test_changed_setting_rolls_one_member_at_a_time_under_a_writer(hosts: TestHosts, tmp_path: Path) -> None:
    ws = init_workspace(hosts, tmp_path / "roll")
    run_cli("apply", "--dir", str(ws), "--yes")
    spec_path = ws / "cluster.yaml"
    spec_path.write_text(
        spec_path.read_text().replace("  election_timeout_ms: 1000", "  election_timeout_ms: 1200")
    )
    plan = plan_json(ws)
    restarts = [s for s in step_ids(plan) if s.endswith("/restart")]
    assert len(restarts) == 3  # every member, each its own (ungrouped, health-gated) step
    leader = json.loads(run_cli("status", "--dir", str(ws), "-o", "json").stdout)
    leader_name = next(r["member"] for r in leader if r["is_leader"])
    assert restarts[-1] == f"{leader_name}/restart"  # the leader last ...
    assert f"{leader_name}/move-leader" in step_ids(plan)  # ... after handing leadership over

    _, spec = load_workspace(ws)
    paths = load_workspace(ws)[0].client_paths()
    tls = TlsFiles(ca=Path(paths.ca_cert), cert=Path(paths.cert), key=Path(paths.key))
    endpoints = [f"https://{m.address}:2379" for m in spec.members]

    async def scenario() -> None:
        async with EtcdClient(endpoints, tls, timeout=2.0) as client:
            writer = Writer(client, prefix="/roll")
            stop = asyncio.Event()
            task = asyncio.create_task(writer.run(stop))
            await asyncio.sleep(1.0)
            proc = await asyncio.to_thread(run_cli, "apply", "--dir", str(ws), "--yes")
            await asyncio.sleep(0.5)
            stop.set()
            await task
            order = re.findall(r"(etcd\d)/restart", proc.stdout)
            assert order == [r.split("/")[0] for r in restarts]
            result = await check_history(client, writer.history)
            assert result.ok, result.problems
            assert result.acknowledged > 50, result

    asyncio.run(scenario())
    assert step_ids(plan_json(ws)) == []
    conf = hosts.run(hosts.hosts[0], ["cat", "/etc/etcd/etcd.conf.yml"]).stdout
    assert "election-timeout: 1200" in conf

    # kill points (a sample on hosts): apply SIGKILLed after the first member's restart, and in the middle
    # of the second's; each time another command works meanwhile and a re-run converges
    from killpoints import kill_and_rerun

    async def converged(directory: Path) -> None:
        assert step_ids(plan_json(directory)) == [], "a re-run of apply left changes to make"
        run_cli("health", "--dir", str(directory))

    for n, timeout in enumerate((1400, 1600)):
        spec_path.write_text(spec_path.read_text().replace(f"election_timeout_ms: {timeout - 200}",
                                                           f"election_timeout_ms: {timeout}"))  # fmt: skip
        rolls = [s for s in step_ids(plan_json(ws)) if s.endswith("/restart")]
        point = f"after:{rolls[0]}" if n == 0 else f"during:{rolls[1]}"
        outcome = asyncio.run(
            kill_and_rerun(ws, ("apply", "--yes"), point, probes=(("status", "-o", "json"),), check=converged)
        )
        assert outcome.rerun == 0, outcome
    conf = hosts.run(hosts.hosts[1], ["cat", "/etc/etcd/etcd.conf.yml"]).stdout
    assert "election-timeout: 1600" in conf


def test_systemd_restarts_a_killed_member_and_a_rebooted_host_comes_back(
    hosts: TestHosts, tmp_path: Path
) -> None:
    ws = init_workspace(hosts, tmp_path / "crash")
    run_cli("apply", "--dir", str(ws), "--yes")
    h2, h3 = hosts.hosts[1], hosts.hosts[2]

    def healthy_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if run_cli("health", "--dir", str(ws), check=False).returncode == 0:
                return True
            time.sleep(0.5)
        return False

    old = hosts.kill_etcd(h2)
    assert healthy_within(30), "the killed member did not come back (Restart=on-failure)"
    new = int(hosts.run(h2, ["systemctl", "show", "-p", "MainPID", "--value", "etcd"]).stdout)
    assert new not in (0, old)

    hosts.stop_host(h3)
    assert run_cli("health", "--dir", str(ws), check=False).returncode != 0
    hosts.start_host(h3)
    assert healthy_within(60), "etcd did not start at boot (enabled unit)"


def test_binary_upload_and_sha256_verified_download(hosts: TestHosts, tmp_path: Path) -> None:
    import http.server
    import tarfile
    import threading

    try:
        # upload: the control machine's etcd goes to /usr/local/bin on every host
        ws = init_workspace(hosts, tmp_path / "upload", "--etcd-binary", "/usr/bin/etcd")
        run_cli("apply", "--dir", str(ws), "--yes")
        for h in hosts.hosts:
            unit = hosts.run(h, ["systemctl", "cat", "etcd"]).stdout
            assert "ExecStart=/usr/local/bin/etcd --config-file" in unit
        run_cli("health", "--dir", str(ws))
        assert "no changes" in run_cli("apply", "--dir", str(ws), "--yes").stdout
        hosts.reset()
        for h in hosts.hosts:
            hosts.run(
                h, ["rm", "-f", "/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/usr/local/bin/etcdutl"]
            )

        # download: a tarball in the official layout, served on loopback, verified by sha256
        release = tmp_path / "release"
        top = release / "etcd-v3.4.23-linux-amd64"
        top.mkdir(parents=True)
        tarball = release / "etcd-v3.4.23-linux-amd64.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            for tool in ("etcd", "etcdctl"):
                tar.add(f"/usr/bin/{tool}", arcname=f"{top.name}/{tool}")
            (top / "README.md").write_text("etcd release\n")
            tar.add(top / "README.md", arcname=f"{top.name}/README.md")
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(release))
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
        try:
            url = f"http://127.0.0.1:{server.server_port}/etcd-v{{version}}-linux-amd64.tar.gz"
            ws = init_workspace(
                hosts, tmp_path / "download", "--etcd-binary", "3.4.23", "--etcd-sha256", "0" * 64
            )
            spec = ws / "cluster.yaml"
            spec.write_text(
                spec.read_text().replace(
                    "  # download_url: a mirror, with {version} in it", f"  download_url: {url}"
                )
            )
            bad = run_cli("apply", "--dir", str(ws), "--yes", check=False, env=cache)
            assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr and "Traceback" not in bad.stderr
            assert nothing_installed(hosts)
            spec.write_text(spec.read_text().replace("0" * 64, digest))
            run_cli("apply", "--dir", str(ws), "--yes", env=cache)
            run_cli("health", "--dir", str(ws))
            installed = hosts.run(hosts.hosts[0], ["sha256sum", "/usr/local/bin/etcd"]).stdout.split()[0]
            assert installed == hashlib.sha256(Path("/usr/bin/etcd").read_bytes()).hexdigest()
            assert (tmp_path / "cache" / "etcdforge" / "releases" / digest / "etcd").is_file()
        finally:
            server.shutdown()
            server.server_close()
    finally:
        for h in hosts.hosts:
            hosts.run(
                h,
                ["rm", "-f", "/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/usr/local/bin/etcdutl"],
                check=False,
            )


def _one_line_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_host_problems_give_one_line_and_change_no_host(hosts: TestHosts, tmp_path: Path) -> None:
    h2 = hosts.hosts[1]
    # unknown host key: known_hosts without etcd2's line
    ws = init_workspace(hosts, tmp_path / "unknown")
    partial = tmp_path / "partial_known_hosts"
    partial.write_text(
        "".join(
            line for line in hosts.known_hosts.read_text().splitlines(keepends=True) if h2.address not in line
        )
    )
    spec = ws / "cluster.yaml"
    spec.write_text(spec.read_text().replace(str(hosts.known_hosts), str(partial)))
    _one_line_failure(
        run_cli("apply", "--dir", str(ws), "--yes", check=False), "etcd2", "accept-new-host-keys"
    )
    assert nothing_installed(hosts)

    # changed host key: refused even with --accept-new-host-keys
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    other = wrong.with_suffix(".pub").read_text().split()[:2]
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(partial.read_text() + f"{h2.address} {other[0]} {other[1]}\n")
    spec.write_text(spec.read_text().replace(str(partial), str(changed)))
    failed = run_cli("apply", "--dir", str(ws), "--yes", "--accept-new-host-keys", check=False)
    _one_line_failure(failed, "etcd2")
    assert "CHANGED" in failed.stderr.upper()
    assert nothing_installed(hosts)

    # failed sudo: a user without sudo rights
    ws = init_workspace(hosts, tmp_path / "nosudo", "--ssh-user", "nosudo", "--sudo")
    _one_line_failure(run_cli("apply", "--dir", str(ws), "--yes", check=False), "sudo")
    assert nothing_installed(hosts)

    # a port already taken on one host
    hosts.run(
        h2,
        ["systemd-run", "--unit", "efblocker", "python3", "-m", "http.server", "2379", "--bind", h2.address],
    )
    try:
        deadline = time.monotonic() + 10
        while not hosts.wait_tcp(h2, 2379) and time.monotonic() < deadline:
            time.sleep(0.1)
        ws = init_workspace(hosts, tmp_path / "port")
        _one_line_failure(
            run_cli("apply", "--dir", str(ws), "--yes", check=False), "etcd2", "port 2379", "in use"
        )
        assert nothing_installed(hosts)
    finally:
        hosts.run(h2, ["systemctl", "stop", "efblocker"], check=False)

    # an unreachable host: cut off from the network
    ws = init_workspace(hosts, tmp_path / "unreachable")
    hosts.partition(h2)
    try:
        _one_line_failure(run_cli("apply", "--dir", str(ws), "--yes", check=False), "etcd2")
    finally:
        hosts.heal(h2)
    assert nothing_installed(hosts)


def test_planted_paths_are_refused_before_any_host_is_touched(hosts: TestHosts, tmp_path: Path) -> None:
    """Security item 1: what the spec's path cannot show is observed on the host. A symlink planted at
    the data dir (h1), a world-writable parent (h2) and a directory full of somebody else's files (h3)
    each refuse plan and apply with one line naming every host, and no host is changed."""
    h1, h2, h3 = hosts.hosts
    ws = init_workspace(hosts, tmp_path / "planted")
    spec = ws / "cluster.yaml"
    spec.write_text(spec.read_text().replace('data_dir: "/var/lib/etcd"', 'data_dir: "/srv/etcd"'))
    assert "/srv/etcd" in spec.read_text()
    hosts.run(h1, ["ln", "-s", "/etc", "/srv/etcd"])
    hosts.run(h2, ["chmod", "1777", "/srv"])
    planted = "mkdir /srv/etcd && echo x > /srv/etcd/notes.txt && chown -R nobody /srv/etcd"
    hosts.run(h3, ["sh", "-c", planted])
    try:
        before = [hosts.run(h, ["stat", "-c", "%a %U", "/etc", "/srv"]).stdout for h in hosts.hosts]
        for verb in (("plan",), ("apply", "--yes")):
            failed = run_cli(verb[0], "--dir", str(ws), *verb[1:], check=False)
            _one_line_failure(failed, "etcd1: /srv/etcd is a symlink (to /etc)", "etcd2:", "world-writable")
            assert "etcd3: /srv/etcd is owned by nobody" in failed.stderr and "notes.txt" in failed.stderr
        assert nothing_installed(hosts)
        assert [hosts.run(h, ["stat", "-c", "%a %U", "/etc", "/srv"]).stdout for h in hosts.hosts] == before
        assert hosts.run(h3, ["stat", "-c", "%U", "/srv/etcd/notes.txt"]).stdout.strip() == "nobody"
    finally:
        hosts.run(h1, ["rm", "-f", "/srv/etcd"], check=False)
        hosts.run(h2, ["chmod", "755", "/srv"], check=False)
        hosts.run(h3, ["rm", "-rf", "/srv/etcd"], check=False)
