"""Gather what doctor judges: the only I/O of ``etcdforge doctor``, all of it read only.

From the cluster (member list, statuses, alarms), each member's /metrics, the PKI (``pki check``'s
gathering), each member's config file and last hour of log, and with ``--hosts`` each host over SSH
(one session for files and logs, one short one for the clock). Local members' files are on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdforge import certs, layout, render
from etcdforge.diagnosis import logs
from etcdforge.diagnosis.facts import BackupFacts, DoctorFacts, HostFacts, MemberFacts
from etcdforge.errors import EtcdforgeError
from etcdforge.hosts.base import Host
from etcdforge.observe.cluster import ClusterView, observe_cluster
from etcdforge.observe.hosts import parse_observation
from etcdforge.observe.metrics import Scrape, scrape_all
from etcdforge.pki.check import CertItem, PkiFacts, check_pki
from etcdforge.runtime.factory import placement
from etcdforge.spec import ClusterSpec, MemberSpec
from etcdforge.workspace import Workspace

#: how much of a local member's log is read (its last hour is what counts)
LOG_TAIL_BYTES = 8 * 1024 * 1024
HOUR = 3600.0


async def gather(
    spec: ClusterSpec, ws: Workspace, *, hosts: bool, dir_arg: str = "", now: datetime | None = None
) -> DoctorFacts:
    from etcdforge.verbs import pki_check
    from etcdforge.verbs.query import status

    now = now or datetime.now(UTC)
    local = placement(spec, ws).members_here
    cluster, rows, scrapes = await asyncio.gather(
        _cluster(spec, ws), status(spec, ws), scrape_all(spec, ws, timeout=3.0)
    )
    raft_index = {r.member: r.status.raft_index for r in rows if r.status is not None}
    by_name = {s.member: s for s in scrapes}
    members: list[MemberFacts] = []
    if local:
        pki = pki_check.gather_local(spec, ws)
        for m in spec.members:
            members.append(_local_member(spec, ws, m, by_name[m.name], now))
    elif hosts:
        pki, members = await _from_hosts(spec, ws, by_name, now)
    else:
        ca, ca_key, items = pki_check.gather_workspace(spec, ws)
        pki = PkiFacts(
            ca, ca_key, tuple(items), trust=_read(ws.trust_bundle), revoked=pki_check.revoked_serials(ws)
        )
        members = [_metrics_only(m.name, by_name[m.name]) for m in spec.members]
    reconcile = f"etcdforge {'up' if local else 'apply'}{dir_arg}"
    reconfigure = f"etcdforge down{dir_arg} && etcdforge up{dir_arg}" if local else reconcile
    return DoctorFacts(
        spec=spec,
        now=now,
        cluster=cluster,
        raft_index=raft_index,
        pki=check_pki(pki, now),
        expiry=expiry(pki),
        peer_capable=peer_capable(spec, ws),
        members=tuple(members),
        backups=read_backups(ws),
        reconcile=reconcile,
        reconfigure=reconfigure,
        dir_arg=dir_arg,
    )


async def _cluster(spec: ClusterSpec, ws: Workspace) -> ClusterView:
    try:
        return await observe_cluster(spec, ws, required=False)
    except EtcdforgeError:
        return ClusterView(reachable=False)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _metrics_only(name: str, scrape: Scrape) -> MemberFacts:
    return MemberFacts(
        name,
        metrics=None if scrape.error else scrape.samples,
        figures=scrape.figures,
        metrics_error=scrape.error,
    )


def _parse_config(data: bytes | None, where: str) -> tuple[Mapping[str, Any] | None, str | None]:
    import yaml

    if data is None:
        return None, f"{where} is missing"
    try:
        loaded = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        return None, f"{where} is not YAML: {str(exc).splitlines()[0]}"
    if not isinstance(loaded, dict):
        return None, f"{where} is not a mapping"
    return loaded, None


def _wanted(spec: ClusterSpec, member: MemberSpec, paths: render.MemberPaths) -> Mapping[str, Any]:
    import yaml

    loaded = yaml.safe_load(render.etcd_config(spec, member, paths))
    assert isinstance(loaded, dict)
    return loaded


def _local_member(
    spec: ClusterSpec, ws: Workspace, m: MemberSpec, scrape: Scrape, now: datetime
) -> MemberFacts:
    paths = ws.member_paths(m.name)
    config, problem = _parse_config(_read(Path(paths.config)), paths.config)
    log_lines, log_error = _local_log(ws.member_log(m.name), now)
    return replace(
        _metrics_only(m.name, scrape),
        config=config,
        config_error=problem if Path(ws.member_dir(m.name)).is_dir() else None,
        wanted_config=_wanted(spec, m, paths),
        log=log_lines,
        log_error=log_error,
        peer_cert=_read(Path(paths.peer_cert)),
    )


def _local_log(path: Path, now: datetime) -> tuple[tuple[logs.LogLine, ...] | None, str | None]:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    return logs.since(logs.parse(text), now.timestamp() - HOUR), None


# --- hosts ----------------------------------------------------------------------------------------------

# One session per host: the member's config (base64), its data dir's owner, mode and filesystem, swap in
# use, the source address of the route to each peer, and the last hour of the running etcd's journal (its
# current invocation only: lines of an earlier cluster on the same host must not count). Arguments: the
# config path, the data dir, the unit, then the peers' addresses.
HOST_SCRIPT = """\
conf=$1 data=$2 unit=$3
shift 3
echo @config
if [ -r "$conf" ]; then base64 -w 0 < "$conf"; echo; else echo missing; fi
echo @datadir
stat -c '%U %a' -- "$data" 2>/dev/null || echo missing
stat -f -c '%T' -- "$data" 2>/dev/null || echo missing
echo @swap
awk 'NR > 1 { used += $4 } END { print used + 0 }' /proc/swaps 2>/dev/null || echo 0
echo @routes
for a do
  src=$(ip -o route get "$a" 2>/dev/null | sed -n 's/.* src \\([^ ]*\\).*/\\1/p')
  echo "$a ${src:--}"
done
echo @log
inv=$(systemctl show -p InvocationID --value "$unit" 2>/dev/null)
if [ -n "$inv" ]; then
  journalctl "_SYSTEMD_INVOCATION_ID=$inv" --since "-1h" -o cat --no-pager 2>/dev/null | tail -n 50000 |
    base64 -w 0
fi
echo
echo @end
"""


async def _from_hosts(
    spec: ClusterSpec, ws: Workspace, scrapes: Mapping[str, Scrape], now: datetime
) -> tuple[PkiFacts, list[MemberFacts]]:
    from etcdforge.runtime.factory import connect_hosts
    from etcdforge.verbs import pki_check

    ca, ca_key, items = pki_check.gather_workspace(spec, ws)
    paths = layout.member_paths(spec)
    # a host that cannot be reached is a finding about that host, not the end of the diagnosis
    async with connect_hosts(spec, ws, required=False) as hosts:
        results = await asyncio.gather(
            *(_host_member(spec, hosts.get(m.name), m, paths, scrapes[m.name], now) for m in spec.members)
        )
    members = []
    files = []
    for host_items, scanned, member in results:
        items += host_items
        if scanned is not None:
            files.append(scanned)
        members.append(member)
    return pki_check.pki_facts(ws, ca, ca_key, items, files), members


async def _host_member(
    spec: ClusterSpec,
    host: Host | None,
    m: MemberSpec,
    paths: render.MemberPaths,
    scrape: Scrape,
    now: datetime,
) -> tuple[list[CertItem], Any, MemberFacts]:
    from etcdforge.verbs import pki_check

    base = _metrics_only(m.name, scrape)
    data_dir = layout.data_dir(spec)
    if host is None:
        return [], None, replace(base, host=HostFacts(data_dir, error=f"cannot connect to {m.name}'s host"))
    peers = [p.address for p in spec.members if p.name != m.name]
    stderr = b""
    try:
        items, scanned = await pki_check.gather_host(host, m, paths)
        offset, uncertainty = await _clock(host)
        argv = ["sh", "-c", HOST_SCRIPT, "sh", paths.config, data_dir, layout.UNIT_NAME, *peers]
        result = await host.run(argv, timeout=60, check=False)
        stderr = result.stderr
        sections = parse_observation(result.stdout.decode(errors="replace"))
        peer_cert = next((i.cert.data for i in items if i.role == "peer"), None)
        member = member_from_host(spec, m, paths, sections, offset, uncertainty, base, peer_cert, now)
    except (EtcdforgeError, ValueError, OSError) as exc:  # binascii.Error is a ValueError
        lines = stderr.decode(errors="replace").strip().splitlines()
        tail = f" ({lines[-1][:200]})" if lines else ""
        failed = HostFacts(data_dir, error=f"cannot read {m.name}'s host: {exc}{tail}")
        return [], None, replace(base, host=failed)
    return items, scanned, member


def member_from_host(
    spec: ClusterSpec,
    m: MemberSpec,
    paths: render.MemberPaths,
    sections: Mapping[str, Sequence[str]],
    offset: float | None,
    uncertainty: float,
    base: MemberFacts,
    peer_cert: bytes | None,
    now: datetime,
) -> MemberFacts:
    """The host script's sections -> the member's facts (pure, tested on captured output)."""
    raw = (sections.get("config") or ["missing"])[0]
    data = None if raw == "missing" else base64.b64decode(raw)
    config, problem = _parse_config(data, f"{m.name}:{paths.config}")
    owner = mode = fs = None
    dd = list(sections.get("datadir") or [])
    if dd and dd[0] != "missing":
        parts = dd[0].split()
        if len(parts) == 2:
            owner, mode = parts[0], int(parts[1], 8)
    if len(dd) > 1 and dd[1] != "missing":
        fs = dd[1].strip()
    swap = (sections.get("swap") or ["0"])[0]
    routes = {}
    for line in sections.get("routes") or []:
        address, _, src = line.partition(" ")
        if src and src != "-":
            routes[address] = src
    log_text = base64.b64decode((sections.get("log") or [""])[0] or b"").decode("utf-8", "replace")
    lines = logs.since(logs.parse(log_text), now.timestamp() - HOUR)
    host = HostFacts(
        layout.data_dir(spec),
        owner,
        mode,
        fs,
        int(swap) if swap.isdigit() else None,
        offset,
        uncertainty,
        routes,
    )
    return replace(
        base,
        config=config,
        config_error=problem,
        wanted_config=_wanted(spec, m, paths),
        log=lines,
        peer_cert=peer_cert,
        host=host,
    )


async def _clock(host: Host) -> tuple[float | None, float]:
    """The host's clock minus ours: ``date`` read in the middle of the round trip (± half of it)."""
    before = time.time()
    result = await host.run(["date", "+%s.%N"], timeout=20, check=False)
    after = time.time()
    try:
        theirs = float(result.stdout.decode().strip())
    except ValueError:
        return None, 0.0
    return theirs - (before + after) / 2, (after - before) / 2


# --- certificates and backups ---------------------------------------------------------------------------


def peer_capable(spec: ClusterSpec, ws: Workspace) -> tuple[tuple[str, str], ...]:
    """Client certificates of the workspace that the members' peer listeners accept: signed by the CA the
    peer listener trusts and good for client auth (client certificates carry no SANs, and etcd checks a
    peer's SANs only when it has some)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.x509.oid import ExtendedKeyUsageOID

    trusted = _read(ws.peer_trusted_ca)
    if trusted is None:
        return ()
    try:
        cas = x509.load_pem_x509_certificates(trusted)
    except ValueError:
        return ()
    out = []
    for req in certs.cert_requests(spec, base_dir=ws.root):
        if req.profile != "client":
            continue
        data = _read(ws.cert_path(req.name))
        if data is None:
            continue
        try:
            cert = x509.load_pem_x509_certificate(data)
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
            continue
        for ca in cas:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue  # not issued by this CA
            out.append(
                (
                    req.name,
                    f"signed by the CA the peer listeners trust ({ca.subject.rfc4514_string()}), "
                    "good for client auth, no SANs to check",
                )
            )
            break
    return tuple(out)


def expiry(pki: PkiFacts) -> tuple[tuple[str, datetime], ...]:
    """When each certificate read expires (the first of a bundle), by its pki check subject."""
    from cryptography import x509

    out = []
    for item in pki.items:
        if item.cert.data is None:
            continue
        try:
            cert = x509.load_pem_x509_certificate(item.cert.data)
        except ValueError:
            continue
        out.append((item.subject, cert.not_valid_after_utc))
    return tuple(out)


def read_backups(ws: Workspace) -> BackupFacts:
    from etcdforge.backup.manifest import taken_at
    from etcdforge.verbs.backup.run import LAST_BACKUP, LAST_FAILURE

    last_ok = last_id = failure = failure_id = None
    try:
        record = json.loads((ws.root / LAST_BACKUP).read_text())
        last_id = str(record["id"])
        last_ok = taken_at(last_id)
    except (OSError, ValueError, KeyError):
        pass
    try:
        failed = json.loads((ws.root / LAST_FAILURE).read_text())
        failure, failure_id = str(failed["error"]), str(failed["id"])
    except (OSError, ValueError, KeyError):
        pass
    return BackupFacts(last_ok, last_id, failure, failure_id)
