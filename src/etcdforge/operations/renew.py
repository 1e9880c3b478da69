"""``pki renew``: reissue leaf certificates from the same CA and install them hot, in both modes.

observe (the control PKI; the members' installed copies; who runs) → plan
(:mod:`~etcdforge.operations.renew_plan`, pure) → execute (one executor, the mode's runtime). In hosts mode
the new files' bytes exist only after issuing, so the hosts part is planned again with them right after
the ``pki/issue`` step (from the same observation: issuing changes no host).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etcdforge import certs, render, topology
from etcdforge.errors import PkiError
from etcdforge.execute import Reporter, execute
from etcdforge.operations import renew_plan
from etcdforge.operations.lifecycle import observe_local, workspace_lock
from etcdforge.plan import IssueCerts, Plan, Step, WriteFile
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, load_workspace


@dataclass(frozen=True)
class CertChange:
    """One certificate considered: renewed (``new_serial`` set after execution) or not due."""

    name: str
    reason: str
    renewed: bool
    old_serial: int | None
    not_after: datetime | None  # before renewal (and after, once executed)
    new_serial: int | None = None


@dataclass(frozen=True)
class RenewResult:
    plan: Plan
    certs: tuple[CertChange, ...]
    executed: bool

    @property
    def renewed(self) -> tuple[CertChange, ...]:
        return tuple(c for c in self.certs if c.renewed)


def _env_step(spec: ClusterSpec, ws: Workspace) -> list[Step]:
    env = render.etcdctl_env(topology.client_urls(spec), ws.client_paths())
    current = ws.env_path.read_bytes() if ws.env_path.is_file() else None
    if current == env:
        return []
    return [Step("workspace/write-env", "local", WriteFile(str(ws.env_path), env), "etcdctl environment")]


def _changed_members(installs: list[Step], touched: tuple[str, ...], reissued: frozenset[str]) -> set[str]:
    """Members whose certificates change now: renewed ones, and out-of-date copies being repaired."""
    hosts = {s.host for s in installs}
    return {
        m
        for m in touched
        if m in hosts or {topology.server_cert_name(m), topology.peer_cert_name(m)} & reissued
    }


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def renew(
    directory: Path,
    *,
    members: tuple[str, ...] = (),
    clients: tuple[str, ...] = (),
    within: timedelta = timedelta(days=30),
    force: bool = False,
    new_keys: bool = False,
    dry_run: bool = False,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
) -> RenewResult:
    from etcdforge.pki import observe_pki, plan_pki

    ws, spec = load_workspace(directory)
    with workspace_lock(ws):
        selected = renew_plan.select_requests(
            spec, certs.cert_requests(spec, base_dir=ws.root), members, clients
        )
        external = certs.external_ca(spec, base_dir=ws.root)
        observed = observe_pki(ws.pki_dir, external)
        now = datetime.now(UTC)
        pki_plan = plan_pki(
            certs.ca_settings(spec, base_dir=ws.root),
            selected,
            observed,
            now,
            external_ca=external,
            renew_before=within,
            force=frozenset(r.name for r in selected) if force else frozenset(),
            new_keys=new_keys,
        )
        if any(s.action == "create-ca" for s in pki_plan.steps):
            raise PkiError(
                f"there is no CA in {ws.pki_dir} to renew from",
                hint="`etcdforge up` (local) or `etcdforge apply` (hosts) creates the PKI",
            )
        changes = [s for s in pki_plan.changes if s.action in ("issue", "reissue")]
        reissued = frozenset(s.name for s in changes)
        rows = []
        for step in pki_plan.steps:
            if step.name == "ca":
                continue
            leaf = observed.leaves.get(step.name)
            cert = leaf.cert if leaf is not None else None
            reason = step.reason
            if step.action == "keep" and cert is not None:
                days = (cert.not_valid_after_utc - now).days
                reason = f"not due: expires in {days} days (--force renews anyway)"
            rows.append(
                CertChange(
                    step.name,
                    reason,
                    step.name in reissued,
                    cert.serial_number if cert is not None else None,
                    cert.not_valid_after_utc if cert is not None else None,
                )
            )
        issue: list[Step] = []
        if changes:
            items = tuple((s.name, s.reason) for s in changes)
            issue.append(
                Step(
                    "pki/issue",
                    "local",
                    IssueCerts(items, pki_plan),
                    "; ".join(f"{n}: {r}" for n, r in items),
                )
            )
        touched = renew_plan.members_touched(spec, {r.name for r in selected})
        if spec.mode == "local":
            plan = await _renew_local(spec, ws, issue, touched, reissued, dry_run=dry_run, reporter=reporter)
        else:
            plan = await _renew_hosts(
                spec,
                ws,
                issue,
                touched,
                reissued,
                dry_run=dry_run,
                accept_new_host_keys=accept_new_host_keys,
                reporter=reporter,
            )
        if not dry_run:
            rows = [_after(ws, r) for r in rows]
        return RenewResult(plan, tuple(rows), executed=not dry_run)


def _after(ws: Workspace, row: CertChange) -> CertChange:
    if not row.renewed:
        return row
    from etcdforge.pki.keys import load_cert

    cert = load_cert(ws.cert_path(row.name))
    return CertChange(
        row.name, row.reason, True, row.old_serial, cert.not_valid_after_utc, cert.serial_number
    )


async def _renew_local(
    spec: ClusterSpec,
    ws: Workspace,
    issue: list[Step],
    touched: tuple[str, ...],
    reissued: frozenset[str],
    *,
    dry_run: bool,
    reporter: Reporter | None,
) -> Plan:
    from etcdforge.operations.local import member_pki_files
    from etcdforge.services.local_runtime import LocalRuntime

    observed = observe_local(spec, ws)
    control = {src: _read(Path(src)) for m in touched for src, _, _ in member_pki_files(ws, m)}
    installed = {m: observed.members[m].pki for m in touched}
    installs = renew_plan.local_install_steps(ws, touched, reissued, installed, control)
    changed = _changed_members(installs, touched, reissued)
    running = {m: observed.members[m].running for m in changed}
    verify = renew_plan.verify_steps(spec, touched, running, peer_required=True)
    plan = Plan("pki-renew", (*issue, *installs, *verify, *_env_step(spec, ws)))
    if not dry_run:
        await execute(plan, LocalRuntime(spec, ws), reporter)
    return plan


async def _renew_hosts(
    spec: ClusterSpec,
    ws: Workspace,
    issue: list[Step],
    touched: tuple[str, ...],
    reissued: frozenset[str],
    *,
    dry_run: bool,
    accept_new_host_keys: bool,
    reporter: Reporter | None,
) -> Plan:
    from etcdforge.operations import deploy
    from etcdforge.services.remote_runtime import RemoteRuntime

    async with deploy.connected(spec, ws, accept_new_host_keys=accept_new_host_keys) as hosts:
        observed = await deploy.observe_hosts(spec, hosts)
        desired, pending = deploy._desired(spec, ws, set(reissued))
        installs = renew_plan.host_install_steps(spec, touched, desired, observed, pending)
        changed = _changed_members(installs, touched, reissued)
        running = {m: observed[m].running for m in changed}
        verify = renew_plan.verify_steps(spec, touched, running, peer_required=False)
        preview = Plan("pki-renew", (*issue, *installs, *verify, *_env_step(spec, ws)))
        if dry_run:
            return preview
        runtime = RemoteRuntime(spec, ws, hosts)
        await execute(Plan("pki-renew", tuple(issue)), runtime, reporter)
        desired, _ = deploy._desired(spec, ws, set())
        installs = renew_plan.host_install_steps(spec, touched, desired, observed, {})
        rest = Plan("pki-renew", (*installs, *verify, *_env_step(spec, ws)))
        await execute(rest, runtime, reporter)
        return Plan("pki-renew", (*issue, *rest.steps))
