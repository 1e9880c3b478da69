"""Control-machine files, the same in every mode: the spec, the etcdctl environment, records of a change
in flight. Both runtimes (and the file-only runtime of verbs that touch nothing else) perform these
actions here, so a re-run finds the same files whichever mode wrote them."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import datetime
from pathlib import Path

from etcdforge.errors import PkiError, WorkspaceError
from etcdforge.fsutil import atomic_write, ensure_dir, read_optional
from etcdforge.plan import Action, IssueCerts, MovePath, RemoveFile, RemoveTree, WriteFile
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace


async def perform_control_file(action: WriteFile | RemoveFile) -> str:
    """Write atomically (skipped when equal) or remove (absent is fine): idempotent, so a re-run of an
    interrupted plan converges."""
    path = Path(action.path)
    if isinstance(action, RemoveFile):
        existed = path.exists()
        path.unlink(missing_ok=True)
        return "removed" if existed else "already gone"
    if read_optional(path) == action.content:
        if os.stat(path).st_mode & 0o7777 != action.mode:  # the content is right, the mode is not
            os.chmod(path, action.mode)
            return "mode fixed"
        return "unchanged"
    ensure_dir(path.parent)
    await asyncio.to_thread(atomic_write, path, action.content, action.mode)
    return "written"


async def issue_certs(spec: ClusterSpec, ws: Workspace, action: IssueCerts, now: datetime) -> str:
    """Issue into the workspace PKI; a deferred plan (None) is made now, from the CA on disk."""
    from etcdforge.pki import apply_pki
    from etcdforge.workspace_pki import plan_workspace_pki

    plan = action.plan
    if plan is None:
        requests = None
        if action.only:
            from etcdforge import certs

            requests = [r for r in certs.cert_requests(spec, base_dir=ws.root) if r.name in action.only]
        plan = plan_workspace_pki(spec, ws, requests=requests, now=now, new_keys=action.new_keys)
        missing = [s.name for s in plan.all_steps if s.action == "create-ca"]
        if missing:
            # a deferred plan signs with the CA an earlier step put there: never a new one
            raise PkiError(f"{ws.pki_dir / missing[0]}.pem is missing; not creating a new CA here",
                           hint="restore it")  # fmt: skip
    ensure_dir(ws.pki_dir)
    events = await asyncio.to_thread(apply_pki, ws.pki_dir, plan, now)
    return f"{sum(1 for e in events if e.paths)} issued"


class ControlFiles:
    """A runtime for plans that only touch control-machine files."""

    async def perform(self, action: Action) -> str:
        if isinstance(action, WriteFile | RemoveFile):
            return await perform_control_file(action)
        if isinstance(action, RemoveTree):
            return await remove_tree(Path(action.path), action.marker)
        if isinstance(action, MovePath):
            return await move_path(Path(action.src), Path(action.dst))
        raise TypeError(f"cannot perform {type(action).__name__} here")


async def remove_tree(path: Path, marker: str) -> str:
    """Remove a control-machine directory holding ``marker``: everything but the marker first, so an
    interrupted removal leaves a directory a re-run recognises and finishes."""
    if not path.exists():
        return "already gone"
    keep = path / marker
    if not keep.is_file():
        raise WorkspaceError(f"{path} has no {marker}; not removing it")
    for entry in sorted(path.iterdir()):
        if entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            await asyncio.to_thread(shutil.rmtree, entry)
        else:
            entry.unlink(missing_ok=True)
    keep.unlink()
    path.rmdir()
    return "removed"


async def move_path(src: Path, dst: Path) -> str:
    if not src.exists() and dst.exists():
        return "already moved"
    os.rename(src, dst)
    return "moved"
