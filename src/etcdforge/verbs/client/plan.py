"""The plans of ``client add`` and ``client remove``, pure: from the spec, the workspace's certificate
facts and etcd's users and roles as observed.

``client add NAME``: the certificate (CN NAME), then the users and roles as the new spec wants them,
then the spec. A name whose revoked certificate is still valid is refused (etcd matches the CN, so a
new user of that name would let the old certificate in). On a cluster whose auth etcdforge did not
manage yet, auth stays as etcd has it and users of its own are refused, not deleted.

``client remove NAME``: the serial recorded as revoked (``pki check`` flags any copy still in use) and
the spec without NAME first — so that from then on every convergence (``up``, ``apply``, a re-run)
deletes the user — then the user (with auth on, its certificate is refused from that moment although
still valid), its role, the certificate and key files. Each step is idempotent; a re-run after a kill
converges, and a remove that already happened says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from etcdforge.access import (
    AuthView,
    Revoked,
    access_steps,
    dump_revoked,
    manages_auth,
    parse_revoked,
    refuse_revoked,
    wanted,
)
from etcdforge.errors import PlanError
from etcdforge.plan import DeleteRole, DeleteUser, IssueCerts, Plan, RemoveFile, Step, WriteFile
from etcdforge.spec import RESERVED_CLIENTS, ClientSpec, ClusterSpec, dump_spec

if TYPE_CHECKING:
    from etcdforge.pki import PkiPlan


@dataclass(frozen=True)
class CertFacts:
    """The client certificate the workspace holds for a name (None fields: no such file)."""

    cert_path: str
    key_path: str
    serial: str | None
    not_after: str | None
    key_exists: bool


def plan_add(
    spec: ClusterSpec,
    new: ClientSpec,
    *,
    spec_path: str,
    issue: tuple[tuple[str, str], ...],
    pki_plan: PkiPlan | None,
    auth: AuthView | None,
    revoked: frozenset[str] = frozenset(),
) -> tuple[Plan, ClusterSpec]:
    """``issue``: the certificates the PKI plan (``pki_plan``) issues, with reasons (empty when the
    client's certificate is already there and valid); ``revoked``: names whose revoked certificate is
    still valid."""
    existing = spec.client(new.name)
    if existing is not None and existing != new:
        raise PlanError(
            f"client {new.name} already exists with other rules",
            hint="edit its entry under clients: in the spec and run `etcdforge apply` (or `up`)",
        )
    clients = spec.clients if existing is not None else (*spec.clients, new)
    data = {**spec.model_dump(), "clients": [c.model_dump() for c in clients]}
    if not manages_auth(spec) and auth is not None:
        # etcdforge takes over the users and roles from now on: auth stays as etcd has it, and users it
        # does not know are the user's to place (never deleted by this command)
        data["auth"] = {"enabled": auth.enabled}
        foreign = sorted(set(auth.users) - set(wanted(ClusterSpec.model_validate(data)).users))
        if foreign:
            raise PlanError(
                f"etcd has users this spec does not list ({', '.join(foreign)}): once the spec has clients, "
                "users it does not list are deleted; nothing was changed",
                hint="add them under clients: in the spec first (or delete them), then add the client",
            )
    new_spec = ClusterSpec.model_validate(data)
    refuse_revoked(new_spec, revoked)
    steps: list[Step] = []
    if issue:
        steps.append(
            Step(
                "pki/issue",
                "local",
                IssueCerts(issue, pki_plan),
                "; ".join(f"{n}: {r}" for n, r in issue),
            )
        )
    warnings: list[str] = []
    if auth is not None:
        access, warnings = access_steps(new_spec, auth, revoked)
        steps += access
    else:
        warnings.append(
            "the cluster does not answer: its user and role are made by the next `etcdforge up` or `apply`"
        )
    if existing is None:
        steps.append(
            Step(
                "workspace/write-spec",
                "local",
                WriteFile(spec_path, dump_spec(new_spec).encode()),
                f"clients: + {new.name}",
            )
        )
    return Plan("client-add", tuple(steps), tuple(warnings)), new_spec


def plan_remove(
    spec: ClusterSpec,
    name: str,
    *,
    spec_path: str,
    revoked_path: str,
    revoked_text: str | None,
    cert: CertFacts,
    auth: AuthView | None,
    now: datetime,
) -> tuple[Plan, ClusterSpec]:
    if name in RESERVED_CLIENTS:
        raise PlanError(f"{name} is etcdforge's own certificate; it cannot be removed")
    revoked = parse_revoked(revoked_text)
    in_spec = spec.client(name) is not None or name in spec.pki.clients
    known = in_spec or cert.serial is not None or cert.key_exists or (auth is not None and name in auth.users)
    if not known:
        if any(r.name == name for r in revoked):
            return Plan("client-remove", ()), spec  # done before: nothing left to do
        raise PlanError(
            f"no client named {name!r}",
            hint="clients: " + (", ".join(c.name for c in spec.clients) or "(none)"),
        )
    if auth is None:
        raise PlanError(
            f"the cluster does not answer: {name}'s etcd user cannot be deleted now, so its certificate "
            "would keep working; nothing was changed",
            hint="run it again when `etcdforge health` shows a quorum",
        )
    data = {
        **spec.model_dump(),
        "clients": [c.model_dump() for c in spec.clients if c.name != name],
        "pki": {**spec.pki.model_dump(), "clients": [c for c in spec.pki.clients if c != name]},
    }
    if manages_auth(spec) and spec.auth.enabled is None:
        # the last client going must not hand etcd's auth back to nobody: the spec keeps saying what it is
        data["auth"] = {"enabled": auth.enabled}
    new_spec = ClusterSpec.model_validate(data)
    steps: list[Step] = []
    warnings: list[str] = []
    # the record and the spec first: from then on every convergence deletes the user
    if cert.serial is not None and not any(r.serial == cert.serial for r in revoked):
        entry = Revoked(name, cert.serial, cert.not_after or "", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        steps.append(
            Step(
                f"pki/revoke:{name}",
                "local",
                WriteFile(revoked_path, dump_revoked([*revoked, entry])),
                f"serial {cert.serial} recorded: `pki check` flags any copy still in use",
            )
        )
    if in_spec or new_spec != spec:
        steps.append(
            Step(
                "workspace/write-spec",
                "local",
                WriteFile(spec_path, dump_spec(new_spec).encode()),
                f"clients: - {name}",
            )
        )
    if name in auth.users:
        steps.append(
            Step(
                f"auth/delete-user:{name}",
                "cluster",
                DeleteUser(name),
                "its certificate is refused from now on" if auth.enabled else "its user goes",
            )
        )
    if name in auth.roles:
        steps.append(Step(f"auth/delete-role:{name}", "cluster", DeleteRole(name), "its key ranges"))
    if not auth.enabled:
        warnings.append(
            f"auth is off: {name}'s certificate keeps full access until auth.enabled is true "
            "(its user is gone, so turning auth on cuts it off)"
        )
    if cert.serial is not None:
        steps.append(Step(f"pki/remove-cert:{name}", "local", RemoveFile(cert.cert_path), "revoked"))
    if cert.key_exists:
        steps.append(Step(f"pki/remove-key:{name}", "local", RemoveFile(cert.key_path), "revoked"))
    return Plan("client-remove", tuple(steps), tuple(warnings)), new_spec
