"""``pki renew``: reissue leaf certificates from the same CA and install them hot, in both modes.

observe (the control PKI; the members' installed copies; who runs) → plan
(:mod:`~etcdforge.verbs.renew.plan`, pure) → execute (one executor, the mode's runtime). In hosts mode
the new files' bytes exist only after issuing, so the hosts part is planned again with them right after
the ``pki/issue`` step (from the same observation: issuing changes no host). :func:`observe_members` and
:func:`install_steps` also serve the CA rotation's reissue phase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etcdforge import certs, render, topology
from etcdforge.errors import PkiError, PlanError
from etcdforge.executor import Reporter, execute
from etcdforge.fsutil import read_optional
from etcdforge.hosts.base import Host
from etcdforge.observe.hosts import HostObserved
from etcdforge.plan import IssueCerts, Plan, Step, WriteFile
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.spec import ClusterSpec
from etcdforge.verbs.renew import plan as renew_plan
from etcdforge.verbs.up.plan import LocalObserved
from etcdforge.verbs.up.run import locked_workspace, observe_local
from etcdforge.workspace import Workspace


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


def _changed_members(installs: list[Step], touched: Sequence[str], reissued: frozenset[str]) -> set[str]:
    """Members whose certificates change now: renewed ones, and out-of-date copies being repaired."""
    hosts = {s.host for s in installs}
    return {
        m
        for m in touched
        if m in hosts or {topology.server_cert_name(m), topology.peer_cert_name(m)} & reissued
    }


@dataclass(frozen=True)
class MembersNow:
    """Who runs, and the members' installed files: local copies, or the hosts' observation."""

    running: Mapping[str, bool]
    local: LocalObserved | None = None
    hosts: Mapping[str, HostObserved] | None = None


async def observe_members(spec: ClusterSpec, ws: Workspace, hosts: Mapping[str, Host]) -> MembersNow:
    if placement(spec, ws).members_here:
        local = observe_local(spec, ws)
        return MembersNow({n: m.running for n, m in local.members.items()}, local=local)
    from etcdforge.verbs.apply import run as deploy

    observed = await deploy.observe_hosts(spec, hosts)
    return MembersNow({n: h.running for n, h in observed.items()}, hosts=observed)


def require_our_layout(spec: ClusterSpec, ws: Workspace, now: MembersNow, members: Sequence[str]) -> None:
    """Refuse when a member's etcd would not read what we write (see :func:`renew_plan.layout_problems`)
    — e.g. an adopted cluster before its first `apply`, or a local member whose config is older than
    the spec's (one made before the peers' CA file existed)."""
    if now.local is not None:
        stale = [
            n
            for n in members
            if (config := now.local.members[n].config) is not None
            and config != (want := render.etcd_config(spec, spec.member(n), ws.member_paths(n)))
            and not render.differs_only_in_initial_keys(config, want)
        ]
        if stale:
            raise PlanError(
                f"the config of {', '.join(stale)} differs from what the spec renders, so etcd would not "
                "read the files this writes",
                hint="run `etcdforge down` and `etcdforge up` (it writes the config), then try again",
            )
        return
    if now.hosts is None:
        return
    from etcdforge.verbs.apply import run as deploy

    desired, _ = deploy.desired_host_files(spec, ws, set())
    problems = renew_plan.layout_problems(spec, desired, now.hosts, members)
    if problems:
        raise PlanError(
            "etcd on these members does not run from etcdforge's files, so new certificates or a new CA "
            "there would not be used: " + "; ".join(problems),
            hint="run `etcdforge plan` / `etcdforge apply` first, then try again",
        )


def install_steps(
    spec: ClusterSpec, ws: Workspace, now: MembersNow, members: Sequence[str], reissued: frozenset[str]
) -> list[Step]:
    """Leaf files to install on ``members`` from the control PKI as it is now; ``reissued`` names the
    certificates about to be issued (planned as changed although their bytes do not exist yet)."""
    if now.local is not None:
        from etcdforge.verbs.up.plan import member_pki_files

        control = {src: read_optional(Path(src)) for m in members for src, _, _ in member_pki_files(ws, m)}
        installed = {m: now.local.members[m].pki for m in members}
        return renew_plan.local_install_steps(ws, members, reissued, installed, control)
    from etcdforge.verbs.apply import run as deploy

    assert now.hosts is not None
    desired, pending = deploy.desired_host_files(spec, ws, set(reissued))
    return renew_plan.host_install_steps(spec, members, desired, now.hosts, pending)


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
    from etcdforge.pki import observe_pki
    from etcdforge.workspace_pki import plan_workspace_pki

    with locked_workspace(directory) as (ws, spec):
        selected = renew_plan.select_requests(
            spec, certs.cert_requests(spec, base_dir=ws.root), members, clients
        )
        now = datetime.now(UTC)
        observed = observe_pki(ws.pki_dir, certs.external_ca(spec, base_dir=ws.root))
        pki_plan = plan_workspace_pki(
            spec,
            ws,
            requests=selected,
            now=now,
            renew_before=within,
            force=frozenset(r.name for r in selected) if force else frozenset(),
            new_keys=new_keys,
        )
        if any(s.action == "create-ca" for s in pki_plan.all_steps):
            raise PkiError(
                f"there is no CA in {ws.pki_dir} to renew from",
                hint="`etcdforge up` (local) or `etcdforge apply` (hosts) creates the PKI",
            )
        changes = [s for s in pki_plan.changes if s.action in ("issue", "reissue")]
        reissued = frozenset(s.name for s in changes)
        rows = []
        for step in pki_plan.all_steps:
            if step.name in ("ca", "peer-ca"):
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
        # only the hosts whose files change: renewing a client certificate needs no host at all
        async with open_runtime(spec, ws, touched, accept_new_host_keys=accept_new_host_keys) as runtime:
            seen = await observe_members(spec, ws, runtime.hosts)
            require_our_layout(spec, ws, seen, touched)
            installs = install_steps(spec, ws, seen, touched, reissued)
            changed = _changed_members(installs, touched, reissued)
            verify = renew_plan.verify_steps(
                spec,
                touched,
                {m: seen.running[m] for m in changed},
                peer_required=placement(spec, ws).peer_reachable,
            )
            # one plan: the renewed files' bytes are deferred values, read when their steps run
            plan = Plan("pki-renew", (*issue, *installs, *verify, *_env_step(spec, ws)))
            if not dry_run:
                await execute(plan, runtime, reporter)
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
