"""``plan`` and ``apply`` for clusters on real hosts: connect → observe → plan → execute.

Every host is connected and observed (concurrently) before anything changes anywhere, so an
unreachable host, an unknown or changed host key, or a failed ``sudo`` stops the run with one line and
leaves every host as it was. ``apply`` first brings the control machine's PKI up to date (the CA key
never leaves it), then plans the hosts with the real certificate bytes and executes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etcdforge import binaries, certs, layout
from etcdforge.access import access_steps, manages_auth, revoked_names
from etcdforge.errors import PlanError
from etcdforge.executor import Reporter, execute
from etcdforge.hosts.base import Host
from etcdforge.observe.auth import read_auth, read_revoked
from etcdforge.observe.cluster import observe_cluster
from etcdforge.observe.hosts import HostObserved, observe_host
from etcdforge.plan import IssueCerts, Plan, Step
from etcdforge.runtime import releases
from etcdforge.runtime.factory import connected, make_runtime
from etcdforge.spec import ClusterSpec
from etcdforge.verbs.apply.plan import BinarySource, managed_dirs, plan_apply
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace, load_workspace

if TYPE_CHECKING:
    from etcdforge.pki import PkiPlan


def binary_source(spec: ClusterSpec) -> BinarySource:
    e = spec.etcd
    if e.source == "system":
        return BinarySource(kind="system")
    if e.source == "upload":
        path = binaries.find_tool("etcd", e.binary)
        found = binaries.probe(path)
        tools = tuple(
            (t, releases.file_sha256(path.parent / t))
            for t in releases.TOOLS[1:]
            if (path.parent / t).is_file()
        )
        return BinarySource(
            kind="upload",
            local_path=str(path),
            sha256=releases.file_sha256(path),
            version=found.version_str,
            tools=tools,
        )
    assert e.version is not None and e.sha256 is not None  # the spec validates this
    cache = releases.default_cache_dir()
    url = releases.release_url(e.download_url, e.version)
    hit = releases.cached(e.sha256, cache)
    etcd = (hit or cache / e.sha256) / "etcd"
    digests: dict[str, str] = {}
    if hit is not None:
        digests = releases.manifest(hit)  # checked on every use, not only when downloaded
        releases.check_version(etcd, e.version)
    return BinarySource(
        kind="download",
        local_path=str(etcd),
        sha256=digests.get("etcd"),
        version=e.version,
        url=url,
        tarball_sha256=e.sha256,
        cache_dir=str(cache),
        tools=tuple((t, d) for t, d in sorted(digests.items()) if t != "etcd"),
    )


async def observe_hosts(spec: ClusterSpec, hosts: Mapping[str, Host]) -> dict[str, HostObserved]:
    paths = layout.managed_paths(spec)
    results = await asyncio.gather(
        *(
            observe_host(
                hosts[m.name],
                m.name,
                paths,
                dirs=managed_dirs(spec),
                data_dir=layout.data_dir(spec),
                binary=layout.binary_path(spec),
                hash_binary=spec.etcd.source != "system",
                stray_patterns=layout.STRAY_PATTERNS,
                guards=layout.guarded_dirs(spec),
            )
            for m in spec.members
            if m.name in hosts  # the members connected to (all, except for a partial operation)
        )
    )
    return {r.member: r for r in results}


def ca_key_ids(spec: ClusterSpec, ws: Workspace) -> frozenset[str]:
    """How a copy of the control machine's CA key is recognised on a member: the file's sha256, and
    ``pub:`` + the sha256 of its public key (SubjectPublicKeyInfo DER), which is the same for the key in
    any encoding (PKCS#1 or PKCS#8, PEM or DER). Empty when there is no CA key here."""
    from cryptography.hazmat.primitives import serialization

    from etcdforge.errors import PkiError
    from etcdforge.pki.keys import parse_key

    external = certs.external_ca(spec, base_dir=ws.root)
    path = external.key_path if external is not None else ws.pki_dir / "ca-key.pem"
    try:
        data = path.read_bytes()
    except OSError:
        return frozenset()
    ids = {hashlib.sha256(data).hexdigest()}
    try:
        public = parse_key(data, origin=str(path)).public_key()
    except PkiError:
        return frozenset(ids)  # an unreadable key is still recognised by its bytes
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ids.add("pub:" + hashlib.sha256(der).hexdigest())
    return frozenset(ids)


def _pki_plan(spec: ClusterSpec, ws: Workspace) -> tuple[PkiPlan, tuple[tuple[str, str], ...]]:
    from etcdforge.workspace_pki import plan_workspace_pki

    plan = plan_workspace_pki(spec, ws)
    return plan, tuple((c.name, c.reason) for c in plan.changes)


def desired_host_files(
    spec: ClusterSpec, ws: Workspace, pending: set[str]
) -> tuple[dict[str, tuple[layout.DesiredFile, ...]], dict[str, dict[str, str]]]:
    """Desired files per member from the control PKI, and per member the files whose certificate is
    ``pending`` (issued by an earlier step of the plan, or not there yet): destination -> the workspace
    file its bytes come from when the step runs."""
    desired: dict[str, tuple[layout.DesiredFile, ...]] = {}
    pending_paths: dict[str, dict[str, str]] = {}
    for member in spec.members:
        pki: dict[str, bytes] = {}
        sources: dict[str, str] = {}
        backup = layout.backup_pki(spec)
        for name in (*layout.pki_names(member.name), *backup):
            stem = name.removesuffix(".pem").removesuffix("-key")
            # the CA files members trust are a rotation's bundle while a CA rotation runs
            path = ws.trusted_source(name)
            pki[name] = path.read_bytes() if path.is_file() else b""
            if stem in pending or not path.is_file():
                sources[name] = str(path)
        desired[member.name] = layout.desired_files(spec, member, pki)
        destinations = {**layout.pki_destinations(spec, member.name), **backup}
        pending_paths[member.name] = {destinations[n]: src for n, src in sources.items()}
    return desired, pending_paths


async def _plan(
    spec: ClusterSpec, ws: Workspace, hosts: Mapping[str, Host], *, force: bool, timeout: float
) -> Plan:
    """The one plan of ``apply``: the control PKI's certificates first, then every host step. Files of
    certificates the first step issues are deferred values (read from the workspace when they run)."""
    source = binary_source(spec)
    pki_plan, pki_items = _pki_plan(spec, ws)
    observed, cluster = await asyncio.gather(
        observe_hosts(spec, hosts), observe_cluster(spec, ws, required=False)
    )
    desired, pending = desired_host_files(spec, ws, {n for n, _ in pki_items})
    host_plan = plan_apply(
        spec,
        desired,
        observed,
        cluster,
        source,
        pending_paths=pending,
        force=force,
        timeout=timeout,
        ca_key_ids=ca_key_ids(spec, ws),
    )
    steps: list[Step] = []
    if pki_items:
        why = "; ".join(f"{n}: {r}" for n, r in pki_items)
        steps.append(Step("pki/issue", "local", IssueCerts(pki_items, pki_plan), why))
    # users, roles and the auth switch, once the cluster is healthy (read now when it answers)
    auth = await read_auth(spec, ws) if manages_auth(spec) and cluster.reachable else None
    access, access_warnings = access_steps(spec, auth, revoked_names(read_revoked(ws), datetime.now(UTC)))
    return Plan(
        verb="apply",
        steps=(*steps, *host_plan.steps, *access),
        warnings=(*host_plan.warnings, *access_warnings),
    )


async def make_plan(
    directory: Path, *, accept_new_host_keys: bool = False, force: bool = False, timeout: float = 120.0
) -> Plan:
    """What ``apply`` would do now (changes nothing on any host, nor in the workspace)."""
    ws, spec = load_workspace(directory)
    async with connected(spec, ws, accept_new_host_keys=accept_new_host_keys) as hosts:
        return await _plan(spec, ws, hosts, force=force, timeout=timeout)


def _same_plan(a: Plan, b: Plan) -> bool:
    return json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)


async def apply(
    directory: Path,
    *,
    accept_new_host_keys: bool = False,
    force: bool = False,
    timeout: float = 120.0,
    reporter: Reporter | None = None,
    confirmed: Plan | None = None,
) -> Plan:
    """Converge the hosts to the spec; returns the plan that was executed.

    The plan is made again under the workspace lock; with ``confirmed`` (the plan the user said yes
    to) a plan that differs from it is refused with nothing changed: the hosts or the workspace changed
    in between, and what runs must be what was shown.
    """
    with locked_workspace(directory) as (ws, spec):
        async with connected(spec, ws, accept_new_host_keys=accept_new_host_keys) as hosts:
            plan = await _plan(spec, ws, hosts, force=force, timeout=timeout)
            if confirmed is not None and not _same_plan(plan, confirmed):
                raise PlanError(
                    "the hosts or the workspace changed since the plan was shown; nothing was changed",
                    hint="run `etcdforge apply` again to see the new plan",
                )
            await execute(plan, make_runtime(spec, ws, hosts), reporter)
            return plan
