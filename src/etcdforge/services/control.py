"""Control-machine files, the same in every mode: the spec, the etcdctl environment, records of a change
in flight. Both runtimes (and the file-only runtime of verbs that touch nothing else) perform these
actions here, so a re-run finds the same files whichever mode wrote them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from etcdforge.fsutil import atomic_write, ensure_dir, read_optional
from etcdforge.plan import Action, RemoveFile, WriteFile


async def perform_control_file(action: WriteFile | RemoveFile) -> str:
    """Write atomically (skipped when equal) or remove (absent is fine): idempotent, so a re-run of an
    interrupted plan converges."""
    path = Path(action.path)
    if isinstance(action, RemoveFile):
        existed = path.exists()
        path.unlink(missing_ok=True)
        return "removed" if existed else "already gone"
    if read_optional(path) == action.content:
        return "unchanged"
    ensure_dir(path.parent)
    await asyncio.to_thread(atomic_write, path, action.content, action.mode)
    return "written"


class ControlFiles:
    """A runtime for plans that only touch control-machine files."""

    async def perform(self, action: Action) -> str:
        if isinstance(action, WriteFile | RemoveFile):
            return await perform_control_file(action)
        raise TypeError(f"cannot perform {type(action).__name__} here")
