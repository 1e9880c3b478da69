"""Kill-point suite (local mode): every mutating verb, SIGKILLed after each of its steps and in the middle
of each step that waits, converges when re-run (see killpoints.py). Both etcd versions run side by side,
each in its own workspace on its own addresses, to keep the suite's wall time down.

How much runs is chosen by ``ETCDFORGE_KILLPOINTS``, so the whole suite stays within its time budget:

- unset (CI): a sample, two or three points per verb spread over its steps (every k-th from an offset
  that rotates daily — ``ETCDFORGE_KILLPOINTS_SEED`` fixes it —, the last, a kill in the middle of a
  wait), each on one of the two versions, alternating;
- ``every``: every point, each on one version, alternating (point k on 3.4 when k is even);
- ``full``: every point on both versions — the whole matrix, for a change to a verb (the closing notes
  give its counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_binaries import candidates, require
from killpoints import Outcome, check_converged, cli, kill_and_rerun, learn_steps, matrix_line, points
from support import etcd_processes

pytestmark = pytest.mark.integration

#: commands run between a kill and the re-run (one per kill point, in turn)
PROBES = (("status", "-o", "json"), ("member", "add", "etcd9", "--dry-run"), ("up", "--dry-run"),
          ("member", "remove", "etcd2", "--dry-run"))  # fmt: skip
#: each version's cluster on its own 127.0.0.x block, so both run at once without racing for addresses;
#: the suite runs as two scheduling streams (tests/conftest.py), each on its own pair of blocks
STREAM_BLOCKS = {
    "killpoints-a": {"etcd-3.4-debian": 110, "etcd-3.5-distro": 130},
    "killpoints-b": {"etcd-3.4-debian": 150, "etcd-3.5-distro": 170},
}
BLOCKS = dict(STREAM_BLOCKS["killpoints-a"])


def write_spec(ws: Path, name: str, binary: Path) -> None:
    """A spec on the version's own block (``up`` then creates everything else)."""
    ws.mkdir(exist_ok=True)
    base = BLOCKS[name]
    members = "".join(f"  - {{name: etcd{i}, address: 127.0.0.{base + i}}}\n" for i in (1, 2, 3))
    (ws / "cluster.yaml").write_text(
        f"name: kp\ntoken: kp-{base}\netcd: {{binary: {binary}}}\nmembers:\n{members}"
    )


@pytest.fixture
def clusters(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[tuple[str, Path, Path]]]:
    """(version, etcd binary, workspace) for both versions, each a running 3-member cluster."""
    group = request.node.get_closest_marker("xdist_group")
    BLOCKS.update(
        STREAM_BLOCKS[group.args[0] if group and group.args[0] in STREAM_BLOCKS else "killpoints-a"]
    )
    from support import stop_all_members

    made = []
    try:
        for name, path in candidates():
            binary = require(path, name)
            ws = tmp_path / name
            write_spec(ws, name, binary)
            made.append((name, binary, ws))

        async def both_up() -> None:  # their own addresses: the two can start at once
            await asyncio.gather(*(ok(ws, "up", "--etcd-bin", str(binary)) for _, binary, ws in made))

        asyncio.run(both_up())
        yield made
    finally:
        for _, _, ws in made:
            stop_all_members(ws)
            for proc in etcd_processes(f"{ws}/"):  # a killed destroy may have removed the pid files
                os.kill(proc, signal.SIGKILL)


MODE = os.environ.get("ETCDFORGE_KILLPOINTS", "sample")
SAMPLE = 2
#: which points the sample takes rotates from run to run (the day's number unless given), so CI covers
#: every point over a few days while each run stays short; the seed is printed with each verb's counts
SEED = int(os.environ.get("ETCDFORGE_KILLPOINTS_SEED") or time.time() // 86400)


def chosen(all_points: list[str]) -> list[int]:
    """Indices of the points this run kills at (see the module docstring)."""
    if MODE in ("every", "full"):
        return list(range(len(all_points)))
    stride = max(1, -(-len(all_points) // SAMPLE))
    picked = set(range(SEED % stride, len(all_points), stride)) | {len(all_points) - 1}
    picked |= {next((i for i, p in enumerate(all_points) if p.startswith("during:")), 0)}
    return sorted(picked)


async def matrix(
    directory: Path,
    argv: tuple[str, ...],
    restore: Callable[[], Awaitable[None]],
    **kill_options: Any,
) -> list[Outcome]:
    steps = await learn_steps(directory, argv)
    await restore()
    outcomes = []
    mine = list(BLOCKS).index(next(n for n in BLOCKS if str(directory).endswith(n)))
    all_points = points(steps)
    for n, i in enumerate(chosen(all_points)):
        point = all_points[i]
        if MODE != "full" and n % len(BLOCKS) != mine:
            continue  # this point runs on the other version
        probe = PROBES[i % len(PROBES)]
        outcomes.append(await kill_and_rerun(directory, argv, point, probes=(probe,), **kill_options))
        await restore()
    return outcomes


async def ok(directory: Path, *argv: str) -> None:
    code, out, err = await cli(directory, *argv)
    assert code == 0, (argv, out, err)


def run_both(
    clusters: list[tuple[str, Path, Path]], verb: str, scenario: Callable[..., Awaitable[list[Outcome]]]
) -> None:
    async def both() -> list[list[Outcome]]:
        return list(await asyncio.gather(*(scenario(name, binary, ws) for name, binary, ws in clusters)))

    for (name, _, _), outcomes in zip(clusters, asyncio.run(both()), strict=True):
        print(matrix_line(verb, name, outcomes), f"seed={SEED}", [o.point for o in outcomes])
        assert all(o.rerun == 0 for o in outcomes)


def test_member_add_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        add = (
            "member",
            "add",
            "etcd4",
            "--address",
            f"127.0.0.{BLOCKS[name] + 4}",
            "--etcd-bin",
            str(binary),
        )
        return await matrix(ws, add, lambda: ok(ws, "member", "remove", "etcd4", "--yes"))

    run_both(clusters, "member add", scenario)


def test_member_remove_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        address = f"127.0.0.{BLOCKS[name] + 3}"
        return await matrix(
            ws,
            ("member", "remove", "etcd3", "--yes"),
            lambda: ok(ws, "member", "add", "etcd3", "--address", address, "--etcd-bin", str(binary)),
        )

    run_both(clusters, "member remove", scenario)


def test_member_replace_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def nothing() -> None:
        pass

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        return await matrix(ws, ("member", "replace", "etcd2", "--yes"), nothing)

    run_both(clusters, "member replace", scenario)


def test_up_from_nothing_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        async def from_nothing() -> None:
            await ok(ws, "destroy", "--yes")
            write_spec(ws, name, binary)

        await from_nothing()
        return await matrix(ws, ("up", "--etcd-bin", str(binary)), from_nothing, under_load=False)

    run_both(clusters, "up", scenario)


def test_destroy_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def gone(ws: Path) -> None:
        assert not ws.exists(), "the workspace is still there"
        assert etcd_processes(f"{ws}/") == [], "an etcd of the destroyed workspace still runs"

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        async def again() -> None:
            write_spec(ws, name, binary)
            await ok(ws, "up", "--etcd-bin", str(binary))

        return await matrix(ws, ("destroy", "--yes"), again, check=gone, under_load=False)

    run_both(clusters, "destroy", scenario)


def test_pki_renew_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def nothing() -> None:
        pass

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        renew = ("pki", "renew", "--member", "etcd2", "--client", "admin", "--force", "--yes")
        return await matrix(ws, renew, nothing, check=renewed)

    run_both(clusters, "pki renew", scenario)


async def renewed(ws: Path) -> None:
    """Converged, and every member presents the certificate the workspace holds (no half-renewal)."""
    from killpoints import check_converged, presented_matches_workspace

    await check_converged(ws)
    await presented_matches_workspace(ws)


def test_pki_rotate_ca_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    async def nothing() -> None:
        pass

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        return await matrix(ws, ("pki", "rotate-ca", "--yes"), nothing, check=rotated)

    run_both(clusters, "pki rotate-ca", scenario)


def test_peer_ca_migration_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    """`pki rotate-ca --peer` on a cluster whose one CA signs its peers too (the migration to a peers' CA):
    each point starts from such a cluster again (destroyed and made anew with a one-CA workspace)."""

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        async def one_ca_cluster() -> None:
            from datetime import UTC, datetime

            from etcdforge.fsutil import atomic_write
            from etcdforge.pki import CaSettings, create_ca

            await ok(ws, "destroy", "--yes")
            write_spec(ws, name, binary)
            ca = create_ca(CaSettings("etcdforge CA"), datetime.now(UTC))
            atomic_write(ws / "pki" / "ca-key.pem", ca.key_pem(), 0o600)
            atomic_write(ws / "pki" / "ca.pem", ca.cert_pem(), 0o644)
            await ok(ws, "up", "--etcd-bin", str(binary))

        async def migrated(directory: Path) -> None:
            await rotated(directory)
            assert (directory / "pki" / "peer-ca.pem").is_file(), "peers have no CA of their own"

        await one_ca_cluster()
        return await matrix(ws, ("pki", "rotate-ca", "--peer", "--yes"), one_ca_cluster, check=migrated)

    run_both(clusters, "pki rotate-ca --peer", scenario)


async def rotated(ws: Path) -> None:
    """Converged, the rotation finished (no record left), members trust only the new CA."""
    from killpoints import check_converged, presented_matches_workspace

    await check_converged(ws)
    assert not (ws / "pki" / "rotation").exists(), "the rotation record was left behind"
    await presented_matches_workspace(ws)


def test_restore_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    """A restore killed at any step, then re-run (the same backup): the cluster is the backup's, the
    record is gone, and between the kill and the re-run other verbs refuse in one line."""

    async def restored(ws: Path) -> None:
        from killpoints import check_converged

        await check_converged(ws)
        assert not (ws / "restore.json").exists(), "the restore record was left behind"
        code, out, err = await cli(ws, "kv", "get", "/kp-restore/marker")
        assert code == 0 and out.splitlines()[1] == "in the backup", (out, err)

    async def nothing() -> None:
        pass

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        await ok(ws, "kv", "put", "/kp-restore/marker", "in the backup")
        code, out, err = await cli(ws, "backup", "now", "-o", "json")
        assert code == 0, (out, err)
        import json

        backup_id = json.loads(out)["id"]
        await ok(ws, "kv", "put", "/kp-restore/marker", "after the backup")
        argv = ("restore", backup_id, "--yes", "--etcd-bin", str(binary))
        return await matrix(ws, argv, nothing, under_load=False, check=restored)

    run_both(clusters, "restore", scenario)


def test_backup_now_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    """A backup killed at any step, then re-run: a whole, verified backup is listed, and no staging
    copy is left behind (an interrupted upload may leave data without a manifest: listed as such)."""

    async def backed_up(ws: Path) -> None:
        import json

        code, out, err = await cli(ws, "backup", "list", "-o", "json")
        assert code == 0, (out, err)
        backups = json.loads(out)[0]["backups"]
        assert backups and backups[-1]["ok"], backups
        staging = ws / "backups" / ".staging"
        assert not staging.is_dir() or not any(staging.iterdir()), list(staging.iterdir())

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        async def nothing() -> None:
            pass

        return await matrix(ws, ("backup", "now"), nothing, check=backed_up)

    run_both(clusters, "backup now", scenario)


def test_recover_converges_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    """A lost quorum (two of three members killed, their data gone), then `recover` killed at any step of
    its own plan or of the `member add`s that follow, then re-run: three healthy voters, no record."""

    async def recovered(ws: Path) -> None:
        from killpoints import check_converged

        await check_converged(ws)
        assert not (ws / "recover.json").exists(), "the recover record was left behind"

    def lose_quorum(ws: Path) -> Callable[[], Awaitable[None]]:
        async def lose() -> None:
            from etcdforge.runtime import supervisor

            for m in ("etcd1", "etcd3"):
                pid = supervisor.running_pid(ws / "members" / m / "etcd.pid")
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    for _ in range(100):
                        if supervisor.running_pid(ws / "members" / m / "etcd.pid") is None:
                            break
                        await asyncio.sleep(0.05)
                import shutil

                shutil.rmtree(ws / "members" / m / "data", ignore_errors=True)

        return lose

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        lose = lose_quorum(ws)
        await lose()
        argv = ("recover", "--yes", "--member", "etcd2", "--etcd-bin", str(binary))
        return await matrix(ws, argv, lose, under_load=False, check=recovered)

    run_both(clusters, "recover", scenario)


def test_client_add_and_remove_converge_from_every_kill_point(clusters: list[tuple[str, Path, Path]]) -> None:
    """``client add`` killed at any step, then re-run: the client is in the spec and etcd as the spec
    says. ``client remove`` killed at any step, then re-run: gone from the spec and etcd, its serial
    recorded. Between points the workspace and etcd are put back by hand (a revoked name cannot be
    added again, so the revocation record goes too)."""
    from etcdforge.etcd import EtcdServerError
    from etcdforge.workspace import admin_client, load_workspace

    add = ("client", "add", "app", "--prefix", "/app/")

    async def clients(ws: Path) -> dict[str, Any]:
        code, out, err = await cli(ws, "client", "list", "-o", "json")
        assert code == 0, (out, err)
        return dict(json.loads(out))

    async def added(ws: Path) -> None:
        await check_converged(ws)
        rows = {c["name"]: c for c in (await clients(ws))["clients"]}
        assert rows["app"]["in_sync"] is True and rows["app"]["access"] == ["readwrite /app/*"], rows

    async def removed(ws: Path) -> None:
        await check_converged(ws)
        data = await clients(ws)
        assert "app" not in {c["name"] for c in data["clients"]}
        assert "app" in {r["name"] for r in data["revoked"]}
        assert not list(ws.glob("pki/app-client*")), "the revoked certificate's files are still there"

    async def reset(ws: Path, spec_text: str, *, with_app: bool) -> None:
        (ws / "cluster.yaml").write_text(spec_text)
        for f in ws.glob("pki/app-client*"):
            f.unlink()
        (ws / "pki" / "revoked.json").unlink(missing_ok=True)
        w, spec = load_workspace(ws)
        async with admin_client(spec, w) as admin:
            for call in (admin.user_delete, admin.role_delete):
                with contextlib.suppress(EtcdServerError):
                    await call("app")
        if with_app:
            await ok(ws, *add)

    async def scenario(name: str, binary: Path, ws: Path) -> list[Outcome]:
        original = (ws / "cluster.yaml").read_text()
        outcomes = await matrix(ws, add, lambda: reset(ws, original, with_app=False), check=added)
        await reset(ws, original, with_app=True)
        remove = ("client", "remove", "app")
        return outcomes + await matrix(ws, remove, lambda: reset(ws, original, with_app=True), check=removed)

    run_both(clusters, "client add/remove", scenario)
