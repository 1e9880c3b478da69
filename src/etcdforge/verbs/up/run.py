"""``up``, ``down`` and ``destroy`` for a local workspace: observe → plan → execute.

These are the library entry points behind the CLI verbs. They take a workspace directory and options,
return the plan they executed (or would execute, with ``dry_run``), and raise :mod:`etcdforge.errors`
exceptions on expected failures. A workspace lock (``flock`` on ``DIR/.lock``) keeps two concurrent
invocations on one workspace from interleaving.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import binaries, topology
from etcdforge.access import manages_auth, revoked_names
from etcdforge.errors import MemberStartError, PlanError, StepError, WorkspaceError
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.fsutil import ensure_dir, read_optional
from etcdforge.observe.auth import read_auth, read_revoked
from etcdforge.plan import Plan
from etcdforge.runtime import supervisor
from etcdforge.runtime.core import Runtime
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.runtime.processes import resolve_binary
from etcdforge.spec import ClusterSpec, load_spec
from etcdforge.verbs.up.plan import (
    BOOTSTRAP_FILE,
    LocalObserved,
    MemberObserved,
    member_pki_files,
    new_local_spec,
    plan_destroy,
    plan_down,
    plan_up,
)
from etcdforge.workspace import Workspace


@dataclass(frozen=True)
class UpResult:
    plan: Plan
    spec: ClusterSpec
    binary: binaries.Binary
    warnings: tuple[str, ...]


def port_is_free(ip: str, port: int) -> bool:
    """True if nothing listens on (ip, port): a bind test (loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # etcd (Go) listens with SO_REUSEADDR, so connections in TIME_WAIT from a cluster that just
        # stopped do not block it; test the same way or we would skip perfectly usable addresses.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def workspace_lock(ws: Workspace) -> Iterator[None]:
    ensure_dir(ws.root)
    fd = os.open(ws.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceError(f"another etcdforge command is working on {ws.root}; try again") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_workspace(
    directory: Path, *, during_restore: bool = False
) -> Iterator[tuple[Workspace, ClusterSpec]]:
    """The workspace and its spec, read under the workspace lock (a spec read before the lock could be
    rewritten by a concurrent command in between). While a restore is in flight only the verbs that say
    ``during_restore`` run (restore itself, backups, down, destroy); the others refuse with one line."""
    ws = Workspace(directory)
    if not ws.exists():
        raise WorkspaceError(f"no cluster in {directory}", hint="run `etcdforge up` first, or pass --dir")
    with workspace_lock(ws):
        if not during_restore and ws.restore_record.is_file():
            raise PlanError(
                "a restore is in progress in this workspace; nothing was changed",
                hint="finish it first: run `etcdforge restore` again",
            )
        yield ws, load_spec(ws.spec_path)


def observe_local(spec: ClusterSpec, ws: Workspace) -> LocalObserved:
    members = {}
    for m in spec.members:
        data = Path(ws.member_paths(m.name).data_dir)
        members[m.name] = MemberObserved(
            running=supervisor.running_pid(ws.member_pid(m.name)) is not None,
            has_data=(data / "member").is_dir(),
            config=read_optional(Path(ws.member_paths(m.name).config)),
            pki={dst: read_optional(Path(dst)) for _, dst, _ in member_pki_files(ws, m.name)},
        )
    spec_text = ws.spec_path.read_text() if ws.spec_path.is_file() else None
    listed = {m.name for m in spec.members}
    others = sorted(p.name for p in ws.members_dir.iterdir()) if ws.members_dir.is_dir() else []
    strays = tuple(
        n for n in others if n not in listed and supervisor.running_pid(ws.member_pid(n)) is not None
    )
    return LocalObserved(
        spec_text=spec_text,
        members=members,
        env_file=read_optional(ws.env_path),
        strays=strays,
        bootstrapping=(ws.root / BOOTSTRAP_FILE).is_file(),
    )


async def up(
    directory: Path,
    *,
    members: int | None = None,
    etcd_bin: str | None = None,
    name: str | None = None,
    timeout: float = 60.0,
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> UpResult:
    ws = Workspace(directory)
    with workspace_lock(ws):
        if ws.exists():
            spec = load_spec(ws.spec_path)
            if members is not None and members != len(spec.members):
                raise WorkspaceError(
                    f"{directory} already has a {len(spec.members)}-member cluster; --members {members} "
                    "does not resize it",
                    hint="use another --dir for a new cluster",
                )
            if not placement(spec, ws).members_here:
                raise WorkspaceError(f"{directory} describes real hosts; use `etcdforge apply` there")
        else:
            spec = new_local_spec(
                members=3 if members is None else members,
                name=name or "local",
                # the spec records an absolute path: it must mean the same binary from any directory
                etcd_binary=str(binaries.find_tool("etcd", etcd_bin)) if etcd_bin else None,
                is_free=port_is_free,
            )
        binary, warnings = resolve_binary(spec, etcd_bin)
        observed = observe_local(spec, ws)

        from etcdforge.workspace_pki import plan_workspace_pki

        pki_plan = plan_workspace_pki(spec, ws)
        control = {
            src: read_optional(Path(src)) for m in spec.members for src, _, _ in member_pki_files(ws, m.name)
        }
        auth = None
        if manages_auth(spec) and any(m.running for m in observed.members.values()):
            auth = await read_auth(spec, ws)
        plan = plan_up(
            spec,
            ws,
            observed,
            auth=auth,
            revoked=revoked_names(read_revoked(ws), datetime.now(UTC)),
            etcd_binary=binary.path,
            pki_items=tuple((c.name, c.reason) for c in pki_plan.changes),
            pki_plan=pki_plan,
            control_pki=control,
            timeout=timeout,
        )
        result = UpResult(plan=plan, spec=spec, binary=binary, warnings=warnings + plan.warnings)
        if dry_run:
            return result
        async with open_runtime(spec, ws, etcd_binary=binary.path) as runtime:
            await _execute_up(spec, plan, runtime, reporter)
        return result


async def _execute_up(spec: ClusterSpec, plan: Plan, runtime: Runtime, reporter: Reporter | None) -> None:
    """Run ``up``'s plan; a start that fails keeps a running quorum, and stops what it started
    only when no quorum came up."""
    try:
        await execute(plan, runtime, reporter)
    except StepError as exc:
        cause = exc.__cause__
        quorum = topology.quorum(len(spec.members))
        if isinstance(cause, MemberStartError) and len(cause.healthy) >= quorum:
            # degraded is normal: a quorum runs, so the cluster serves; keep it and say what failed
            failed = [m.name for m in spec.members if m.name not in cause.healthy]
            raise MemberStartError(
                f"{', '.join(failed)} did not start ({cause.message}); the cluster runs on "
                f"{', '.join(cause.healthy)} ({len(cause.healthy)} of {len(spec.members)}, quorum "
                f"{quorum})",
                member=cause.member,
                log_tail=cause.log_tail,
                healthy=cause.healthy,
                hint=f"`etcdforge member replace {failed[0]}` rebuilds it from the others",
            ) from exc
        await runtime.services.stop_started()  # no quorum: leave nothing half-started
        raise
    except BaseException:
        # Leave nothing half-started: stop exactly the members this run started.
        await runtime.services.stop_started()
        raise


async def down(directory: Path, *, dry_run: bool = False, reporter: Reporter | None = None) -> Plan:
    with locked_workspace(directory, during_restore=True) as (ws, spec):
        plan = plan_down(spec, observe_local(spec, ws))
        if not dry_run:
            async with open_runtime(spec, ws) as runtime:
                await execute(plan, runtime, reporter)
        return plan


async def destroy(
    directory: Path,
    *,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    confirm: Confirm | None = None,
) -> Plan:
    """Stop every etcd of the workspace and delete it; ``confirm`` must say yes to the deletion.

    A workspace already gone is nothing to do (a re-run after the deletion finished); the spec is deleted
    last, so an interrupted deletion is still a workspace that a re-run finishes.
    """
    if not Workspace(directory).exists():
        leftovers = [p for p in directory.iterdir() if p.name != ".lock"] if directory.is_dir() else []
        if leftovers:
            raise WorkspaceError(
                f"{directory} is not an etcdforge workspace (no cluster.yaml); not removing it"
            )
        if directory.is_dir() and not dry_run:
            (directory / ".lock").unlink(missing_ok=True)
            directory.rmdir()
        return Plan(verb="destroy", steps=())
    with locked_workspace(directory, during_restore=True) as (ws, spec):
        plan = plan_destroy(spec, ws, observe_local(spec, ws))
        if not dry_run:
            async with open_runtime(spec, ws) as runtime:
                await execute(plan, runtime, reporter, confirm=confirm)
        return plan
