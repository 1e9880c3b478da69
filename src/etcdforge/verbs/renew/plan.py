"""Plan ``pki renew`` (pure): which certificates to reissue, where the new files go, what to verify.

Rules:

* only leaf certificates are renewed, always from the CA that signed them; a missing CA is an error
  (renewal never creates one);
* a certificate is renewed when it expires within the window, when it is invalid, or when asked to
  (``force``); everything selected but not due is reported, so "nothing happened" always says why;
* the files go to the members in place, without a restart — etcd reads its certificate and key on each
  new handshake; only the leaf files are touched (never the CA file, which would need a restart);
* a member whose installed copy differs from the control PKI is also brought up to date, so a renewal
  interrupted after issuing converges on the next run;
* each running member's client and peer endpoints are then checked with a new handshake: they must
  present the new serial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from etcdforge import certs, layout, render, topology
from etcdforge.errors import PlanError
from etcdforge.observe.hosts import HostObserved
from etcdforge.pki.model import CertRequest
from etcdforge.plan import InstallMemberPki, Step, VerifyPresented
from etcdforge.spec import ClusterSpec
from etcdforge.verbs.up.plan import member_pki_files
from etcdforge.workspace import Workspace


def select_requests(
    spec: ClusterSpec,
    requests: Sequence[CertRequest],
    members: Sequence[str] = (),
    clients: Sequence[str] = (),
) -> tuple[CertRequest, ...]:
    """The requests to consider: the named members' and clients' certificates, or all of them."""
    known_members = {m.name for m in spec.members}
    unknown = [m for m in members if m not in known_members]
    if unknown:
        raise PlanError(
            f"no member named {', '.join(unknown)}",
            hint=f"members are {', '.join(sorted(known_members))}",
        )
    unknown_clients = [c for c in clients if c not in certs.client_names(spec)]
    if unknown_clients:
        raise PlanError(
            f"no client certificate named {', '.join(unknown_clients)}",
            hint=f"clients are {', '.join(spec.pki.clients)} (pki.clients in the spec)",
        )
    if not members and not clients:
        return tuple(requests)
    wanted = {topology.server_cert_name(m) for m in members} | {topology.peer_cert_name(m) for m in members}
    wanted |= {topology.client_cert_name(c) for c in clients}
    return tuple(r for r in requests if r.name in wanted)


def _stem(file_name: str) -> str:
    return file_name.removesuffix(".pem").removesuffix("-key")


def members_touched(spec: ClusterSpec, names: Iterable[str]) -> tuple[str, ...]:
    """Members one of whose certificates is among ``names``, in spec order."""
    names = set(names)
    return tuple(
        m.name
        for m in spec.members
        if topology.server_cert_name(m.name) in names or topology.peer_cert_name(m.name) in names
    )


def local_install_steps(
    ws: Workspace,
    members: Sequence[str],
    reissued: frozenset[str],
    installed: Mapping[str, Mapping[str, bytes | None]],
    control: Mapping[str, bytes | None],
) -> list[Step]:
    """Copy renewed (or out-of-date) leaf files into local members' directories; never the CA file."""
    steps: list[Step] = []
    for member in members:
        trust = {ws.trusted_ca, ws.peer_trusted_ca}
        leaf = tuple(f for f in member_pki_files(ws, member) if Path(f[0]) not in trust)
        stale = [
            Path(dst).name
            for src, dst, _ in leaf
            if _stem(Path(src).name) in reissued or installed[member].get(dst) != control.get(src)
        ]
        if stale:
            steps.append(
                Step(
                    f"{member}/install-pki",
                    member,
                    InstallMemberPki(member=member, files=leaf),
                    f"renewed or out of date: {', '.join(stale)} (no restart: etcd reloads per handshake)",
                )
            )
    return steps


def host_install_steps(
    spec: ClusterSpec,
    members: Sequence[str],
    desired: Mapping[str, Sequence[layout.DesiredFile]],
    hosts: Mapping[str, HostObserved],
    pending: Mapping[str, Mapping[str, str]],
) -> list[Step]:
    """Write renewed (or out-of-date) leaf files on hosts, in place; only files needing no restart."""
    steps: list[Step] = []
    for member in members:
        for f in desired[member]:
            if f.effect != "none":
                continue  # the CA file, config and unit are `apply`'s business (they restart)
            state = hosts[member].files.get(f.path)
            deferred = pending.get(member, {}).get(f.path)
            if deferred is not None:
                why = "renewed certificate"
            elif state is None or state.sha256 != _sha(f.content):
                why = "differs from the control PKI"
            elif (state.mode, state.owner, state.group) != (f.mode, f.owner, f.group):
                have = f"{state.mode:04o} {state.owner}:{state.group}"
                why = f"is {have}, want {f.mode:04o} {f.owner}:{f.group}"
            else:
                continue
            steps.append(
                Step(
                    f"{member}/file:{f.path}",
                    member,
                    f.put(member, source=deferred),
                    why + " (in place, no restart)",
                    group="install",
                )
            )
    return steps


def verify_steps(
    spec: ClusterSpec,
    members: Sequence[str],
    running: Mapping[str, bool],
    *,
    peer_required: bool,
    ports: tuple[str, ...] = ("client", "peer"),
) -> list[Step]:
    """A new handshake per running member's endpoint in ``ports`` (client, peer) must show the new
    serial."""
    steps: list[Step] = []
    for name in members:
        if not running.get(name, False):
            continue
        member = spec.member(name)
        for role, url, cert, required in (
            ("client", topology.client_url(spec, member), topology.server_cert_name(name), True),
            ("peer", topology.peer_url(spec, member), topology.peer_cert_name(name), peer_required),
        ):
            if role not in ports:
                continue
            steps.append(
                Step(
                    f"{name}/verify-{role}",
                    name,
                    VerifyPresented(name, url, cert, required, peer=role == "peer"),
                    f"a new handshake with {url} must present the new {cert} certificate",
                )
            )
    return steps


def layout_problems(
    spec: ClusterSpec,
    desired: Mapping[str, Sequence[layout.DesiredFile]],
    hosts: Mapping[str, HostObserved],
    members: Sequence[str],
) -> list[str]:
    """Why a member's etcd would not read the files etcdforge writes: it runs from another command line
    (a hand-written unit, an adopted cluster before `apply`), or its config or unit differ from the spec.
    Certificates written then would never be served, and a CA written then never trusted."""
    problems = []
    for n in members:
        h = hosts[n]
        if h.running and h.main_argv is not None and h.main_argv != layout.unit_argv(spec):
            problems.append(f"{n}: etcd runs from another command line ({' '.join(h.main_argv[:2])} …)")
            continue
        for f in desired[n]:
            if f.path not in (layout.CONFIG, layout.UNIT):
                continue
            state = h.files.get(f.path)
            old = h.texts.get(f.path)
            if state is None:
                problems.append(f"{n}: {f.path} is missing")
            elif state.sha256 != _sha(f.content) and not (
                f.path == layout.CONFIG
                and old is not None
                and render.differs_only_in_initial_keys(old, f.content)
            ):
                problems.append(f"{n}: {f.path} differs from the spec")
    return problems


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
