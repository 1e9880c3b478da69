"""Local mode (the embedded default): observe the workspace, plan ``up``/``down``/``destroy``.

``plan_up`` is pure: given the spec, what was observed, and the PKI plan, it decides which files to
write, which members to start and why. Safety rules here:

- ``up`` never wipes a data dir and never starts a cluster that would lose data: if some members have
  data and others have none (a wiped member), it refuses instead of bootstrapping that member afresh;
- a member already running is left alone; only stopped members are started, without waiting for each
  to become ready (a new cluster's first member cannot be ready before a quorum is up); a new member
  starts only once the one started before it serves its peer port (etcd's bootstrap check would
  otherwise stall a second on each member that is bound but not serving yet);
- the CA key is never copied into a member's directory.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etcdforge import render, topology
from etcdforge.access import EMPTY, AuthView, access_steps
from etcdforge.errors import PlanError, WorkspaceError
from etcdforge.plan import (
    InstallMemberPki,
    IssueCerts,
    Plan,
    RemoveFile,
    RemoveTree,
    StartMembers,
    Step,
    StopMember,
    WaitHealthy,
    WaitPeerServing,
    WriteFile,
)
from etcdforge.runtime.factory import placement
from etcdforge.spec import ClusterSpec, EtcdSettings, MemberSpec, dump_spec
from etcdforge.workspace import Workspace

if TYPE_CHECKING:
    from etcdforge.pki import PkiPlan

MAX_LOCAL_MEMBERS = 9
#: how long a started member's peer listener is awaited before a new member starts (it serves within tens
#: of milliseconds, or once its WAL is read; one that does not is left to the health wait)
PEER_SERVING_SECONDS = 2.0
DEFAULT_CLIENT_PORT = 2379
DEFAULT_PEER_PORT = 2380
DEFAULT_METRICS_PORT = 2381


@dataclass(frozen=True)
class MemberObserved:
    running: bool
    has_data: bool
    config: bytes | None  # current etcd.conf.yml content
    pki: Mapping[str, bytes | None]  # destination path -> content (None: missing)


@dataclass(frozen=True)
class LocalObserved:
    spec_text: str | None
    members: Mapping[str, MemberObserved]
    env_file: bytes | None
    #: running etcd processes of this workspace that the spec does not list (the learner of an
    #: interrupted `member add`, a member removed by hand from the spec)
    strays: tuple[str, ...] = ()
    #: a first `up` started the new cluster and has not seen it healthy yet (BOOTSTRAP_FILE exists)
    bootstrapping: bool = False


#: written before a new cluster's members start, removed once it is healthy: while it exists, members
#: without data are part of the first bootstrap (etcd derives the cluster ID from the initial cluster and
#: the token, so a member started later with state "new" joins the same cluster) — not wiped members
BOOTSTRAP_FILE = "bootstrap.json"


def new_local_spec(
    *,
    members: int,
    name: str,
    etcd_binary: str | None,
    is_free: Callable[[str, int], bool],
    token: str | None = None,
) -> ClusterSpec:
    """A spec for ``members`` local members on the first free block of 127.0.0.x addresses.

    Tries 127.0.0.1..N with the standard ports, then the next blocks of N addresses, so a second
    workspace can run beside the first. ``is_free(ip, port)`` is injected (a bind test in practice).
    """
    if not 1 <= members <= MAX_LOCAL_MEMBERS:
        raise PlanError(f"--members must be between 1 and {MAX_LOCAL_MEMBERS}, not {members}")
    base = int(ipaddress.ip_address("127.0.0.1"))
    start = 0
    while start + members <= 254:
        ips = [str(ipaddress.ip_address(base + start + i)) for i in range(members)]
        ports = (DEFAULT_CLIENT_PORT, DEFAULT_PEER_PORT, DEFAULT_METRICS_PORT)
        if all(is_free(ip, p) for ip in ips for p in ports):
            break
        start += members
    else:
        raise PlanError(
            "no free block of 127.0.0.x addresses with ports 2379/2380/2381",
            hint="stop another workspace (`etcdforge down --dir …`) or free the ports",
        )
    return ClusterSpec(
        name=name,
        mode="local",
        token=token or f"{name}-{secrets.token_hex(6)}",
        etcd=EtcdSettings(binary=etcd_binary),
        members=tuple(MemberSpec(name=f"etcd{i + 1}", address=ip) for i, ip in enumerate(ips)),
    )


def member_pki_files(ws: Workspace, member: str) -> tuple[tuple[str, str, int], ...]:
    """(source in the control PKI, destination in the member dir, mode) — no CA key among them."""
    paths = ws.member_paths(member)
    server = topology.server_cert_name(member)
    peer = topology.peer_cert_name(member)
    return (
        (str(ws.trusted_ca), paths.ca_cert, 0o644),
        (str(ws.cert_path(server)), paths.server_cert, 0o644),
        (str(ws.key_path(server)), paths.server_key, 0o600),
        (str(ws.cert_path(peer)), paths.peer_cert, 0o644),
        (str(ws.key_path(peer)), paths.peer_key, 0o600),
        (str(ws.peer_trusted_ca), paths.peer_ca_cert, 0o644),
    )


def plan_up(
    spec: ClusterSpec,
    ws: Workspace,
    observed: LocalObserved,
    *,
    etcd_binary: Path,
    pki_items: tuple[tuple[str, str], ...],
    pki_plan: PkiPlan | None,
    control_pki: Mapping[str, bytes | None],
    timeout: float = 60.0,
    auth: AuthView | None = None,
    revoked: frozenset[str] = frozenset(),
) -> Plan:
    """Steps that bring the local cluster up from whatever state the workspace is in.

    ``pki_items`` are the certificates the PKI plan will (re)issue with reasons; ``control_pki`` is the
    current content of the control PKI files (source -> bytes) so members whose copies differ get
    their files installed.
    """
    steps: list[Step] = []
    spec_text = dump_spec(spec)
    if observed.spec_text is None:
        steps.append(
            Step(
                "workspace/write-spec",
                "local",
                WriteFile(str(ws.spec_path), spec_text.encode()),
                "new workspace",
            )
        )
    if pki_items:
        steps.append(
            Step(
                "pki/issue",
                "local",
                IssueCerts(items=pki_items, plan=pki_plan),
                "; ".join(f"{n}: {r}" for n, r in pki_items),
            )
        )
    reissued = {n for n, _ in pki_items}

    with_data = [m.name for m in spec.members if observed.members[m.name].has_data]
    without_data = [m.name for m in spec.members if not observed.members[m.name].has_data]
    bootstrap = not with_data or observed.bootstrapping
    if with_data and without_data and not observed.bootstrapping:
        raise PlanError(
            f"member(s) {', '.join(without_data)} have no data while {', '.join(with_data)} do: "
            "starting them "
            "would bootstrap them afresh into an existing cluster",
            hint="restore their data dirs, or `etcdforge destroy` and start over",
        )

    to_start: list[MemberSpec] = []
    for member in spec.members:
        obs = observed.members[member.name]
        files = member_pki_files(ws, member.name)
        stale = []
        for src, dst, _mode in files:
            stem = Path(src).name.removesuffix(".pem").removesuffix("-key")
            if stem in reissued or obs.pki.get(dst) is None or obs.pki.get(dst) != control_pki.get(src):
                stale.append(Path(dst).name)
        if stale:
            steps.append(
                Step(
                    f"{member.name}/install-pki",
                    member.name,
                    InstallMemberPki(member=member.name, files=files),
                    "certificates missing or changed: " + ", ".join(stale),
                )
            )
        paths = ws.member_paths(member.name)
        config = render.etcd_config(spec, member, paths)
        if obs.running and obs.config != config and not _initial_only(obs.config, config):
            raise PlanError(
                f"member {member.name} is running with a different config",
                hint="run `etcdforge down` then `etcdforge up` to apply it",
            )
        if obs.config != config:
            why = "new member" if obs.config is None else "config changed"
            steps.append(
                Step(f"{member.name}/write-config", member.name, WriteFile(paths.config, config), why)
            )
        if not obs.running:
            to_start.append(member)

    # before the starts: a cluster that comes up degraded (a member that cannot start) is still used
    env = render.etcdctl_env(topology.client_urls(spec), ws.client_paths())
    if observed.env_file != env:
        steps.append(
            Step("workspace/write-env", "local", WriteFile(str(ws.env_path), env), "etcdctl environment")
        )
    record = str(ws.root / BOOTSTRAP_FILE)
    if to_start and bootstrap and not observed.bootstrapping:
        steps.append(
            Step(
                "workspace/record-bootstrap",
                "local",
                WriteFile(record, b'{"op": "bootstrap"}\n'),
                "a new cluster: an interrupted first start resumes as a bootstrap",
            )
        )
    new = [not observed.members[m.name].has_data for m in to_start]
    for i, member in enumerate(to_start):
        why = ("new member" if new[i] else "not running") + f" (etcd {etcd_binary})"
        steps.append(Step(f"{member.name}/start", member.name, StartMembers((member.name,)), why))
        if i + 1 < len(to_start) and new[i + 1]:  # the next one runs etcd's bootstrap check
            steps.append(
                Step(
                    f"{member.name}/peer-serving",
                    member.name,
                    WaitPeerServing(member.name, topology.peer_url(spec, member), PEER_SERVING_SECONDS),
                    "the next member's bootstrap check asks this one: let it find the port serving",
                )
            )
    if to_start or observed.bootstrapping:  # (a resumed bootstrap was never seen healthy)
        steps.append(
            Step(
                "cluster/wait-healthy",
                "local",
                WaitHealthy(tuple(m.name for m in spec.members), timeout),
                "every member must answer a linearizable read",
            )
        )
    if bootstrap and (to_start or observed.bootstrapping):
        steps.append(
            Step("workspace/clear-bootstrap", "local", RemoveFile(record), "the new cluster is healthy")
        )

    # users, roles and the auth switch (a new cluster has none; one not read yet gets ensure steps)
    access, access_warnings = access_steps(
        spec, EMPTY if bootstrap and not observed.bootstrapping else auth, revoked
    )
    steps += access
    return Plan(verb="up", steps=tuple(steps), warnings=(*spec.warnings(), *access_warnings))


def _initial_only(old: bytes | None, new: bytes) -> bool:
    return old is not None and render.differs_only_in_initial_keys(old, new)


def plan_down(spec: ClusterSpec, observed: LocalObserved) -> Plan:
    steps = [
        Step(f"{m.name}/stop", m.name, StopMember(m.name), "running")
        for m in spec.members
        if observed.members[m.name].running
    ]
    steps += [
        Step(f"{name}/stop", name, StopMember(name), "running, but not in the spec (an interrupted change)")
        for name in observed.strays
    ]
    return Plan(verb="down", steps=tuple(steps))


def plan_destroy(spec: ClusterSpec, ws: Workspace, observed: LocalObserved) -> Plan:
    if not placement(spec, ws).members_here:
        raise WorkspaceError(
            f"{ws.root} describes a cluster on real hosts; destroy removes local workspaces only"
        )
    steps = list(plan_down(spec, observed).steps)
    steps.append(
        Step(
            "workspace/remove",
            "local",
            RemoveTree(str(ws.root)),
            "destroy: data, PKI and spec",
            destroys=f"the workspace {ws.root} (every member's data, the PKI and the spec)",
        )
    )
    return Plan(verb="destroy", steps=tuple(steps))
