"""``backup drill``: prove a backup restores, without touching the cluster it came from.

The backup's objects are copied into a throwaway workspace's own directory target; that workspace gets a
3-member local cluster on free 127.0.0.x addresses (``up``), which ``restore`` then replaces with the
backup (fetch, every check, stop, restore, start, KV hashes equal); the drill reads what came back
(revision, keys) and ``destroy``s the throwaway cluster, also when something failed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdforge.backup.catalog import find_backup
from etcdforge.backup.manifest import manifest_key
from etcdforge.backup.stores import open_store
from etcdforge.errors import BackupError, PlanError
from etcdforge.executor import Reporter
from etcdforge.workspace import load_workspace

#: where throwaway clusters look for free addresses (127.0.0.X for X in this range, three in a row)
DRILL_BLOCK = range(200, 250)


@dataclass(frozen=True)
class DrillResult:
    backup_id: str
    target: str
    addresses: tuple[str, ...]
    revision: int
    keys: int
    restore_seconds: float
    checks: tuple[str, ...]


def free_addresses(count: int = 3) -> tuple[str, ...]:
    from etcdforge.verbs.up.run import port_is_free

    for base in DRILL_BLOCK:
        addresses = tuple(f"127.0.0.{base + i}" for i in range(count))
        if all(port_is_free(a, p) for a in addresses for p in (2379, 2380)):
            return addresses
    raise PlanError("no free 127.0.0.x addresses for a throwaway cluster (127.0.0.200-252)")


async def drill(
    directory: Path,
    wanted: str = "latest",
    *,
    target: str | None = None,
    identities: Sequence[Path] = (),
    etcd_bin: str | None = None,
    reporter: Reporter | None = None,
) -> DrillResult:
    from etcdforge.verbs.restore.run import restore
    from etcdforge.verbs.up.run import destroy, up
    from etcdforge.workspace import admin_client

    ws, spec = load_workspace(directory)
    chosen = spec.backup.target(target)
    addresses = free_addresses()
    with tempfile.TemporaryDirectory(prefix="etcdforge-drill-") as tmp:
        work = Path(tmp)
        folder = work / "target" / spec.name
        folder.mkdir(parents=True)
        async with open_store(spec, ws, chosen) as store:
            manifest = await find_backup(store, wanted)
            for key in (manifest.stored.key, manifest_key(manifest.id)):
                await store.get_file(key, folder / key)
        drill_ws = work / "cluster"
        drill_ws.mkdir()
        members = "".join(f"  - {{name: etcd{i + 1}, address: {a}}}\n" for i, a in enumerate(addresses))
        (drill_ws / "cluster.yaml").write_text(
            f"name: {spec.name}\ntoken: drill-{manifest.id.lower()}\n"
            f"backup:\n  targets:\n    - {{name: drill, kind: dir, path: '{work / 'target'}'}}\n"
            f"members:\n{members}"
        )
        try:
            await up(drill_ws, etcd_bin=etcd_bin, reporter=reporter)
            began = time.monotonic()
            restored = await restore(
                drill_ws,
                manifest.id,
                target="drill",
                identities=identities,
                etcd_bin=etcd_bin,
                confirm=lambda _steps: True,
                reporter=reporter,
                no_snapshot=True,
            )
            seconds = time.monotonic() - began
            dws, dspec = load_workspace(drill_ws)
            async with admin_client(dspec, dws, timeout=5.0) as client:
                everything = await client.get(b"", prefix=True, count_only=True)
            if everything.revision < manifest.restore_revision:
                raise BackupError(
                    f"drill: the restored cluster is at revision {everything.revision}, "
                    f"below the backup's {manifest.restore_revision}"
                )
            if manifest.check.total_keys is not None and everything.count > manifest.check.total_keys:
                raise BackupError(
                    f"drill: {everything.count} keys restored, "
                    f"more than the backup's {manifest.check.total_keys}"
                )
        finally:
            await destroy(drill_ws, confirm=lambda _steps: True)
            shutil.rmtree(work, ignore_errors=True)
    return DrillResult(
        manifest.id,
        chosen.name,
        addresses,
        everything.revision,
        everything.count,
        seconds,
        (*restored.warnings,),
    )
