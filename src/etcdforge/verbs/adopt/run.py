"""``etcdforge adopt``: describe a hand-built cluster (the guide's) in a workspace, changing no host.

connect → observe (read only: unit, argv, flags, the CA directory's certificates, JSON and CA key) →
check every member against ``--member`` → ask etcd itself (member list, health) with a short-lived
client certificate signed by the cluster's own CA → write the workspace: the CA and cfssl JSON into
``pki/`` (as ``pki import-cfssl`` does), then ``cluster.yaml`` last. From then on ``plan``/``apply``
converge the hosts to etcdforge's layout with rolling restarts (:mod:`etcdforge.verbs.apply.plan`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdforge import layout
from etcdforge.errors import EtcdError, PlanError, WorkspaceError
from etcdforge.executor import execute
from etcdforge.fsutil import atomic_write, ensure_dir
from etcdforge.hosts.base import Host
from etcdforge.observe import adopted as ao
from etcdforge.pki.import_cfssl import CfsslImport, analyze
from etcdforge.plan import IssueCerts, Plan, Step, WriteFile
from etcdforge.runtime.factory import connected, make_runtime
from etcdforge.spec import SPEC_FILE, ClusterSpec, load_spec_text
from etcdforge.verbs.init import parse_members, render_spec
from etcdforge.verbs.pki_import import import_steps, pki_settings
from etcdforge.workspace import Workspace


@dataclass(frozen=True)
class SshOptions:
    user: str = "root"
    port: int = 22
    key: Path | None = None
    known_hosts: Path | None = None
    sudo: bool = False


@dataclass(frozen=True)
class AdoptResult:
    plan: Plan  # what adopt writes in the workspace (nothing on the hosts)
    spec_path: Path
    settings: ao.AdoptedSettings
    imported: CfsslImport
    ca_key_on: tuple[str, ...]  # "member:path" where the CA key was found
    hosts: tuple[ao.HostFacts, ...]


async def _observe(host: Host, member: str, address: str) -> ao.HostFacts:
    result = await host.run(["sh", "-c", ao.UNIT_SCRIPT, "sh", layout.UNIT_NAME], timeout=60)
    show, argv, env, fragment = ao.parse_unit_output(result.stdout.decode(errors="replace"))
    from_process = argv is not None
    if argv is None:
        argv = ao.exec_start(fragment) or ()
    active = show.get("ActiveState", "") if show.get("LoadState") == "loaded" else ""
    return ao.HostFacts(
        member=member,
        address=address,
        active_state=active,
        unit_path=show.get("FragmentPath", ""),
        argv=argv,
        from_process=from_process,
        flags=ao.parse_flags(argv, env),
    )


async def _files(host: Host, directories: Sequence[str]) -> tuple[dict[str, bytes], tuple[str, ...]]:
    result = await host.run(["sh", "-c", ao.FILES_SCRIPT, "sh", *directories], timeout=60)
    return ao.parse_files_output(result.stdout.decode(errors="replace"))


def merge_pki(
    per_host: Mapping[str, Mapping[str, bytes]], trusted_ca: str
) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """One file set by name from every host's CA directory (and its ``../csr``): the first host's copy
    wins. The CA certificate must be the same everywhere. Returns (files, "member:path" of CA keys)."""
    merged: dict[str, bytes] = {}
    ca_key_on: list[str] = []
    ca_certs: dict[str, str] = {}
    for member, files in per_host.items():
        for path, data in sorted(files.items()):
            name = path.rsplit("/", 1)[1]
            if path == trusted_ca:
                ca_certs[member] = hashlib.sha256(data).hexdigest()
            if "ca-key" in name and name.endswith(".pem"):
                ca_key_on.append(f"{member}:{path}")
            merged.setdefault(name, data)
    if len(set(ca_certs.values())) > 1:
        raise PlanError(f"the members trust different CA files at {trusted_ca}",
                        hint="adopt a cluster with one CA")  # fmt: skip
    if not ca_certs:
        raise PlanError(f"{trusted_ca} (--trusted-ca-file) is on no member")
    # the trusted CA is the CA, whatever its name: make sure the import sees it as the CA
    ca_name = trusted_ca.rsplit("/", 1)[1]
    for name in [n for n in merged if n.endswith("ca.pem") and n != ca_name]:
        del merged[name]
    return merged, tuple(ca_key_on)


def _with_workspace_ca_key(files: dict[str, bytes], ca_name: str, ws: Workspace) -> dict[str, bytes]:
    """No CA key on the hosts: use the workspace's (``pki import-cfssl`` first) if it is this CA's."""
    key_name = ca_name.removesuffix(".pem") + "-key.pem"
    if key_name in files or not ws.ca_cert.is_file():
        return files
    if ws.ca_cert.read_bytes().strip() != files.get(ca_name, b"").strip():
        return files
    key = ws.pki_dir / "ca-key.pem"
    return {**files, key_name: key.read_bytes()} if key.is_file() else files


async def _cluster_view(
    imp: CfsslImport, members: Sequence[tuple[str, str]], settings: ao.AdoptedSettings
) -> tuple[list[tuple[str, tuple[str, ...], bool]], list[str]]:
    """Member list and health, asked with a client certificate signed by the cluster's CA for this call
    (kept in a private temporary directory, removed afterwards)."""
    from etcdforge.etcd import EtcdClient, TlsFiles
    from etcdforge.pki import CertRequest, KeyPair, issue
    from etcdforge.pki.keys import parse_key

    ca = KeyPair(cert=imp.ca_cert, key=parse_key(imp.ca_key_pem, origin=imp.ca_file))
    probe = issue(
        ca, CertRequest(name="adopt-probe", cn="etcdforge-adopt", profile="client"), datetime.now(UTC)
    )
    urls = {name: f"https://{address}:{settings.client_port}" for name, address in members}
    with tempfile.TemporaryDirectory(prefix="etcdforge-adopt-") as tmp:
        d = Path(tmp)
        atomic_write(d / "ca.pem", imp.ca_cert_pem, 0o644)
        atomic_write(d / "client.pem", probe.cert_pem(), 0o644)
        atomic_write(d / "client-key.pem", probe.key_pem(), 0o600)
        tls = TlsFiles(ca=d / "ca.pem", cert=d / "client.pem", key=d / "client-key.pem")
        async with EtcdClient(list(urls.values()), tls, timeout=5.0) as client:
            try:
                listed = await client.member_list()
            except EtcdError as exc:
                raise PlanError(f"the cluster does not answer: {exc}",
                                hint="adopt needs a running, healthy cluster") from exc  # fmt: skip

            async def answers(url: str) -> bool:
                try:
                    await client.status(url)
                    return True
                except EtcdError:
                    return False

            ok = await asyncio.gather(*(answers(u) for u in urls.values()))
    unhealthy = [name for name, good in zip(urls, ok, strict=True) if not good]
    return [(m.name, tuple(m.peer_urls), m.is_learner) for m in listed], unhealthy


def _pki_lines(imp: CfsslImport) -> list[str]:
    settings = pki_settings(imp)
    lines = ["  # adopted: the cluster's own CA (now DIR/pki/ca.pem, ca-key.pem); one certificate per member"]
    for key in ("key", "subject"):
        if key in settings:
            lines.append(f"  {key}: {json.dumps(settings[key])}")
    lines.append("  clients: [admin]               # client certificates; admin is the tool's own")
    if settings["cfssl"]:
        lines.append("  cfssl:                         # the imported cfssl JSON: usages, expiry, key, names")
        lines += [f"    {k}: {json.dumps(v)}" for k, v in settings["cfssl"].items()]
    return lines


def _tuning_lines(tuning: Mapping[str, str]) -> list[str]:
    lines = []
    defaults = {"heartbeat_interval_ms": "100", "election_timeout_ms": "1000"}
    for key, value in {**defaults, **tuning}.items():
        text = value if re.fullmatch(r"\d+", value) else json.dumps(value)
        lines.append(f"{key}: {text}")
    return lines


async def adopt(
    directory: Path,
    *,
    members: Sequence[str],
    name: str | None,
    ssh: SshOptions,
    accept_new_host_keys: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> AdoptResult:
    """Read a hand-built cluster (read-only on the hosts) and write the workspace, under its lock: one
    plan (the CA and cfssl settings, the admin certificate, the spec last); ``dry_run`` writes nothing."""
    from etcdforge.verbs.up.run import workspace_lock

    with workspace_lock(Workspace(directory)):
        return await _adopt(
            directory, members=members, name=name, ssh=ssh, accept_new_host_keys=accept_new_host_keys,
            force=force, dry_run=dry_run,
        )  # fmt: skip


async def _adopt(
    directory: Path,
    *,
    members: Sequence[str],
    name: str | None,
    ssh: SshOptions,
    accept_new_host_keys: bool,
    force: bool,
    dry_run: bool,
) -> AdoptResult:
    ws = Workspace(directory)
    spec_path = directory / SPEC_FILE
    if spec_path.exists() and not force:
        raise WorkspaceError(
            f"{spec_path} already exists", hint="use a new --dir, or --force to overwrite it"
        )
    pairs = parse_members(members)
    cluster = name or re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "etcd"

    def text(**observed: Any) -> str:
        return render_spec(
            name=cluster, members=pairs, ssh_user=ssh.user, ssh_port=ssh.port, ssh_key=ssh.key,
            known_hosts=ssh.known_hosts, sudo=ssh.sudo, etcd_binary="system", etcd_sha256=None,
            **observed,
        )  # fmt: skip

    # a provisional spec only to connect (validated like the final one)
    probe_spec = load_spec_text(text(token="adopting"), source=str(spec_path))
    ensure_dir(directory)  # known_hosts may be relative to it
    async with connected(probe_spec, ws, accept_new_host_keys=accept_new_host_keys) as hosts:
        facts = list(await asyncio.gather(*(_observe(hosts[n], n, a) for n, a in pairs)))
        settings = ao.check_members(facts)
        trusted = facts[0].flags["trusted-ca-file"]
        dirs = [settings.ca_dir, f"{settings.ca_dir.rsplit('/', 1)[0] or ''}/csr"]
        fetched = await asyncio.gather(*(_files(hosts[f.member], dirs) for f in facts))
    per_host = {f.member: files for f, (files, _) in zip(facts, fetched, strict=True)}
    merged, ca_key_on = merge_pki(per_host, trusted)
    merged = _with_workspace_ca_key(merged, trusted.rsplit("/", 1)[1], ws)
    if not any("ca-key" in n for n in merged):
        raise PlanError(
            "the CA key is on no member",
            hint=f"import it first: etcdforge pki import-cfssl DIR-WITH-THE-CA-KEY --dir {directory}",
        )
    imp = analyze(merged, datetime.now(UTC))
    listed, unhealthy = await _cluster_view(imp, pairs, settings)
    ao.check_cluster(settings, pairs, listed, unhealthy)

    final = text(
        token=settings.token,
        system_binary=settings.binary,
        client_port=settings.client_port,
        peer_port=settings.peer_port,
        data_dir=settings.data_dir,
        etcd_tuning=_tuning_lines(settings.tuning)
        + ([f"tls: {json.dumps(dict(settings.tls))}"] if settings.tls else []),
        pki_lines=_pki_lines(imp),
        header=(
            "# etcdforge cluster spec, written by `etcdforge adopt` from what runs on the hosts.",
            "# Next: `etcdforge plan --dir DIR` shows the way to etcdforge's layout; `apply` rolls it out.",
        ),
    )
    spec = load_spec_text(final, source=str(spec_path))  # never write a spec that would not load
    plan = Plan(
        "adopt",
        (
            *import_steps(directory, imp),
            admin_certificate_step(spec, ws),
            # last: a failed adopt leaves no spec behind
            Step("workspace/write-spec", "local", WriteFile(str(spec_path), final.encode()), "adopted"),
        ),
    )
    if not dry_run:
        await execute(plan, make_runtime(spec, ws, {}))
    return AdoptResult(plan, spec_path, settings, imp, ca_key_on, tuple(facts))


def admin_certificate_step(spec: ClusterSpec, ws: Workspace) -> Step:
    """Only the tool's own client certificate (the members' come with ``apply``): with it ``plan`` can ask
    the adopted cluster who leads, and ``status``/``health``/``env`` work at once. Its PKI plan is made
    when the step runs (deferred): the CA it signs with is written by the steps before it."""
    from etcdforge import topology

    admin = topology.client_cert_name(topology.ADMIN_CLIENT)
    why = "the tool's own client certificate"
    return Step("pki/issue", "local", IssueCerts(((admin, why),), None, only=(admin,)), why)
