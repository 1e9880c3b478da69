"""``client add|remove|list|show``: observe (the workspace's certificate, etcd's users and roles) → one
plan (:mod:`~etcdforge.verbs.client.plan`) → the one executor. Users and roles go through etcd's API
with the admin certificate, so both modes run the same steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import certs, topology
from etcdforge.access import (
    REVOKED_FILE,
    AuthView,
    dump_revoked,
    manages_auth,
    permissions,
    revoked_names,
    wanted,
)
from etcdforge.executor import Reporter, execute
from etcdforge.observe.auth import read_auth, read_revoked
from etcdforge.plan import Plan, permission_text
from etcdforge.spec import ClientSpec, ClusterSpec
from etcdforge.verbs.client.plan import CertFacts, plan_add, plan_remove
from etcdforge.verbs.maintenance.run import run_plan
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace


@dataclass(frozen=True)
class ClientResult:
    plan: Plan
    executed: bool


def cert_facts(ws: Workspace, name: str) -> CertFacts:
    from cryptography import x509

    stem = topology.client_cert_name(name)
    cert_path, key_path = ws.cert_path(stem), ws.key_path(stem)
    serial = not_after = None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serial = f"{cert.serial_number:x}"
        not_after = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OSError, ValueError):
        pass
    return CertFacts(str(cert_path), str(key_path), serial, not_after, key_path.is_file())


async def add(
    directory: Path, new: ClientSpec, *, dry_run: bool = False, reporter: Reporter | None = None
) -> ClientResult:
    """Issue NAME's certificate, make its etcd user and role, add it to the spec."""
    from etcdforge.workspace_pki import plan_workspace_pki

    with locked_workspace(directory) as (ws, spec):
        candidate = ClusterSpec.model_validate(
            {
                **spec.model_dump(),
                "clients": [*(c.model_dump() for c in spec.clients if c.name != new.name), new.model_dump()],
            }
        )
        stem = topology.client_cert_name(new.name)
        requests = [r for r in certs.cert_requests(candidate, base_dir=ws.root) if r.name == stem]
        pki_plan = plan_workspace_pki(candidate, ws, requests=requests)
        issue = tuple((c.name, c.reason) for c in pki_plan.changes)
        auth = await read_auth(candidate, ws)
        revoked = revoked_names(read_revoked(ws), datetime.now(UTC))
        plan, new_spec = plan_add(
            spec, new, spec_path=str(ws.spec_path), issue=issue, pki_plan=pki_plan, auth=auth, revoked=revoked
        )
        executed = await run_plan(new_spec, ws, plan, reporter, dry_run)
        return ClientResult(plan, executed)


async def remove(
    directory: Path,
    name: str,
    *,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    now: datetime | None = None,
) -> ClientResult:
    """Delete NAME's etcd user and role (its certificate is refused at once with auth on), record the
    certificate's serial as revoked, drop it from the spec and the workspace."""
    with locked_workspace(directory) as (ws, spec):
        revoked_path = ws.pki_dir / REVOKED_FILE
        revoked_text = dump_revoked(read_revoked(ws)).decode()
        auth = await read_auth(spec, ws)
        plan, new_spec = plan_remove(
            spec,
            name,
            spec_path=str(ws.spec_path),
            revoked_path=str(revoked_path),
            revoked_text=revoked_text,
            cert=cert_facts(ws, name),
            auth=auth,
            now=now or datetime.now(UTC),
        )
        executed = await run_plan(new_spec, ws, plan, reporter, dry_run)
        return ClientResult(plan, executed)


@dataclass(frozen=True)
class ClientInfo:
    """One client as ``client list``/``show`` report it: from the spec, its certificate, and etcd."""

    name: str
    kind: str  # "application" (clients:), "certificate" (pki.clients, no rules), "etcdforge" (own)
    access: tuple[str, ...]  # "readwrite /app/*" or "root"
    serial: str | None
    not_after: str | None
    #: what etcd holds for its user: its roles and the roles' ranges (None: not read / no user)
    user_roles: tuple[str, ...] | None
    in_sync: bool | None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "access": list(self.access),
            "serial": self.serial,
            "not_after": self.not_after,
            "user_roles": None if self.user_roles is None else list(self.user_roles),
            "in_sync": self.in_sync,
        }


@dataclass(frozen=True)
class ClientsReport:
    auth_enabled: bool | None  # None: the cluster did not answer
    managed: bool
    clients: tuple[ClientInfo, ...]
    revoked: tuple[dict[str, str], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "auth_enabled": self.auth_enabled,
            "managed": self.managed,
            "clients": [c.to_json() for c in self.clients],
            "revoked": list(self.revoked),
        }


def _info(spec: ClusterSpec, ws: Workspace, name: str, auth: AuthView | None) -> ClientInfo:
    own = spec.client(name)
    want = wanted(spec)
    if own is not None:
        kind = "application"
        access = ("root",) if own.root else tuple(permission_text(p) for p in permissions(own))
    elif name in (topology.ADMIN_CLIENT, certs.BACKUP_CLIENT):
        kind, access = "etcdforge", ("root",)
    else:
        kind, access = "certificate", ("everything while auth is off; nothing with auth on",)
    facts = cert_facts(ws, name)
    roles = None if auth is None or name not in auth.users else auth.users[name]
    in_sync = None
    if auth is not None and manages_auth(spec):
        if name not in want.users:  # a certificate without rules: in line when etcd has no such user
            in_sync = roles is None
        else:
            role_ok = all(
                auth.roles.get(r) is not None and set(auth.roles[r]) == set(want.roles[r])
                for r in want.users[name]
                if r in want.roles
            )
            in_sync = roles is not None and set(roles) == set(want.users[name]) and role_ok
    return ClientInfo(name, kind, access, facts.serial, facts.not_after, roles, in_sync)


async def report(directory: Path, only: str | None = None) -> ClientsReport:
    from etcdforge.errors import PlanError
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(directory)
    auth = await read_auth(spec, ws)
    names = list(certs.client_names(spec))
    if only is not None:
        if only not in names:
            raise PlanError(f"no client named {only!r}", hint="clients: " + ", ".join(names))
        names = [only]
    revoked = read_revoked(ws)
    return ClientsReport(
        auth_enabled=None if auth is None else auth.enabled,
        managed=manages_auth(spec),
        clients=tuple(_info(spec, ws, n, auth) for n in names),
        revoked=tuple(r.to_json() for r in revoked),
    )


async def config(
    directory: Path,
    name: str,
    consumer: str,
    *,
    bundle: Path | None = None,
    reporter: Reporter | None = None,
    dry_run: bool = False,
) -> tuple[str, Plan | None]:
    """What ``consumer`` needs to connect as ``name``; with ``bundle``, the certificate, key and CA are
    first written there (key 0600) through one plan — under the workspace lock, so a ``client remove``
    cannot take the files away half-way; ``dry_run``: the plan only, nothing written."""
    if bundle is None:
        return await _config(directory, name, consumer, None, reporter, dry_run)
    with locked_workspace(directory):
        return await _config(directory, name, consumer, bundle, reporter, dry_run)


async def _config(
    directory: Path, name: str, consumer: str, bundle: Path | None, reporter: Reporter | None, dry_run: bool
) -> tuple[str, Plan | None]:
    from etcdforge.clientconfig import ClientTarget, render_config
    from etcdforge.errors import PlanError
    from etcdforge.plan import Step, WriteFile
    from etcdforge.render import ClientPaths
    from etcdforge.runtime.control import ControlFiles
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(directory)
    if name not in certs.client_names(spec):
        raise PlanError(f"no client named {name!r}", hint="clients: " + ", ".join(certs.client_names(spec)))
    paths = ws.client_paths(name)
    for label, path in (("certificate", paths.cert), ("key", paths.key)):
        if not Path(path).is_file():
            raise PlanError(
                f"{name}'s {label} is not in the workspace ({path})", hint="run `etcdforge up` or `apply`"
            )
    plan = None
    if bundle is not None:
        target = bundle.expanduser().resolve()
        copies = ClientPaths(
            ca_cert=str(target / "ca.pem"),
            cert=str(target / f"{name}.pem"),
            key=str(target / f"{name}-key.pem"),
        )
        steps = [
            Step(
                f"bundle/{Path(dst).name}", "local", WriteFile(dst, Path(src).read_bytes(), mode, secret), why
            )
            for src, dst, mode, secret, why in (
                (paths.ca_cert, copies.ca_cert, 0o644, False, "the CA(s) the members' certificates chain to"),
                (paths.cert, copies.cert, 0o644, False, f"{name}'s certificate"),
                (paths.key, copies.key, 0o600, True, f"{name}'s private key"),
            )
        ]
        plan = Plan("client-bundle", tuple(steps))
        if not dry_run:
            await execute(plan, ControlFiles(), reporter)
        paths = copies
    own = spec.client(name)
    prefix = own.access[0].prefix if own is not None and len(own.access) == 1 else None
    text = render_config(consumer, ClientTarget(tuple(topology.client_urls(spec)), paths, prefix))  # type: ignore[arg-type]
    return text, plan
