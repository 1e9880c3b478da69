"""Gather what :func:`etcdforge.pki.check.check_pki` judges: the only I/O of ``pki check``.

Three sources, all read only:

* the control machine's workspace PKI (``DIR/pki``, or the user's external CA);
* in local mode, each member's installed copies (``DIR/members/NAME/pki``) and its whole directory
  (except the data dir), scanned for the CA key;
* in hosts mode (:func:`gather_hosts`), the same files on every member over SSH, plus every small file
  under ``/etc/etcd`` scanned for the CA key: one command, so one SSH session, per host.

It lives in :mod:`etcdforge.verbs`, not in :mod:`etcdforge.pki`, because it does I/O (files, SSH)
and imports the spec/workspace layer; :mod:`etcdforge.pki.check` stays pure. The CLI imports it lazily.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from etcdforge import certs, layout, topology
from etcdforge.hosts.base import Host
from etcdforge.hosts.errors import HostError
from etcdforge.observe.hosts import parse_observation
from etcdforge.pki.check import CertItem, FileFacts, MemberFiles, PkiFacts, sha256_hex
from etcdforge.pki.observe import PEER_CA_KEY
from etcdforge.render import MemberPaths
from etcdforge.runtime.factory import placement
from etcdforge.spec import ClusterSpec, MemberSpec
from etcdforge.workspace import Workspace

#: owner of a member's key files on a real host (see layout.desired_files)
HOST_KEY_OWNER = "etcd"
#: files bigger than this cannot be a PEM private key (an RSA-8192 key is ~6.5 KB), so the CA key scan
#: of a member directory skips them instead of reading logs
MAX_KEY_FILE_SIZE = 64 * 1024


def read_local(path: Path) -> FileFacts:
    """A local file's content, mode, owner and group; never raises."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return FileFacts(str(path), None)
    except OSError as exc:
        return FileFacts(str(path), None, problem=f"cannot stat: {exc.strerror or exc}")
    owner, group = _names(st.st_uid, st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileFacts(str(path), None, mode, owner, group, problem=f"unreadable: {exc.strerror or exc}")
    return FileFacts(str(path), data, mode, owner, group)


def _names(uid: int, gid: int) -> tuple[str, str]:
    import grp
    import pwd

    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return owner, group


def _member_items(
    prefix: str, member: MemberSpec, paths: MemberPaths, read: dict[str, FileFacts], key_owner: str | None
) -> list[CertItem]:
    sans = topology.member_sans(member)
    return [
        CertItem(f"{prefix}:ca", "ca", read[paths.ca_cert]),
        CertItem(f"{prefix}:peer-ca", "peer-ca", read[paths.peer_ca_cert]),
        CertItem(
            f"{prefix}:server",
            "server",
            read[paths.server_cert],
            read[paths.server_key],
            sans.ips,
            sans.dns,
            key_owner,
        ),
        CertItem(
            f"{prefix}:peer",
            "peer",
            read[paths.peer_cert],
            read[paths.peer_key],
            sans.ips,
            sans.dns,
            key_owner,
        ),
    ]


def _paths(paths: MemberPaths) -> tuple[str, ...]:
    p = paths
    return (p.ca_cert, p.server_cert, p.server_key, p.peer_cert, p.peer_key, p.peer_ca_cert)


def gather_workspace(spec: ClusterSpec, ws: Workspace) -> tuple[FileFacts, bytes | None, list[CertItem]]:
    """(configured CA certificate, CA key bytes, workspace items) from the control machine."""
    user = getpass.getuser()
    ext = certs.external_ca(spec, base_dir=ws.root)
    ca_cert_path = ext.cert_path if ext is not None else ws.ca_cert
    ca_key_path = ext.key_path if ext is not None else ws.pki_dir / "ca-key.pem"
    ca = read_local(ca_cert_path)
    ca_key = read_local(ca_key_path)
    items = [CertItem("ca", "ca", ca, ca_key, key_owner=user)]
    if ws.separate_peers:
        peer_key = ws.pki_dir / PEER_CA_KEY
        items.append(
            CertItem("peer-ca", "peer-ca", read_local(ws.peer_ca_cert), read_local(peer_key), key_owner=user)
        )
    if ext is not None:
        items.append(CertItem("pki/ca.pem", "ca", read_local(ws.ca_cert)))
    by_name = {m.name: m for m in spec.members}
    for req in certs.cert_requests(spec, base_dir=ws.root):
        member = by_name.get(req.cn) if req.profile != "client" else None
        sans = topology.member_sans(member) if member is not None else None
        items.append(
            CertItem(
                req.name,
                req.profile,
                read_local(ws.cert_path(req.name)),
                read_local(ws.key_path(req.name)),
                sans.ips if sans else (),
                sans.dns if sans else (),
                user,
            )
        )
    # a revoked client's files left behind (a `client remove` killed before it removed them)
    listed = {i.subject for i in items}
    for name in set(revoked_serials(ws).values()):
        stem = topology.client_cert_name(name)
        if stem not in listed and ws.cert_path(stem).is_file():
            items.append(
                CertItem(stem, "client", read_local(ws.cert_path(stem)), read_local(ws.key_path(stem)))
            )
    return ca, ca_key.data, items


def pki_facts(
    ws: Workspace, ca: FileFacts, ca_key: bytes | None, items: list[CertItem], members: list[MemberFiles]
) -> PkiFacts:
    separate = ws.separate_peers
    return PkiFacts(
        ca=ca,
        ca_key=ca_key,
        items=tuple(items),
        members=tuple(members),
        trust=_trust(ws),
        revoked=revoked_serials(ws),
        peer_ca=read_local(ws.peer_ca_cert) if separate else None,
        peer_ca_key=read_local(ws.pki_dir / PEER_CA_KEY).data if separate else None,
        peer_trust=ws.peer_trust_bundle.read_bytes() if ws.peer_trust_bundle.is_file() else None,
    )


def revoked_serials(ws: Workspace) -> dict[str, str]:
    """serial -> client name, from pki/revoked.json (``client remove``)."""
    from etcdforge.observe.auth import read_revoked

    return {r.serial: r.name for r in read_revoked(ws)}


def gather_local(spec: ClusterSpec, ws: Workspace) -> PkiFacts:
    """The workspace PKI, plus (local mode) every member's installed copies and directory scan."""
    ca, ca_key, items = gather_workspace(spec, ws)
    members: list[MemberFiles] = []
    if placement(spec, ws).members_here:
        user = getpass.getuser()
        for member in spec.members:
            if not ws.member_pki_dir(member.name).is_dir():
                continue  # not set up yet: nothing installed to check
            paths = ws.member_paths(member.name)
            read = {p: read_local(Path(p)) for p in _paths(paths)}
            items += _member_items(member.name, member, paths, read, user)
            members.append(_scan_local(member.name, ws.member_dir(member.name), Path(paths.data_dir)))
    return pki_facts(ws, ca, ca_key, items, members)


def _trust(ws: Workspace) -> bytes | None:
    return ws.trust_bundle.read_bytes() if ws.trust_bundle.is_file() else None


def _scan_local(name: str, directory: Path, data_dir: Path) -> MemberFiles:
    digests: dict[str, str] = {}
    pems: dict[str, bytes] = {}
    skip = data_dir.resolve()
    for root, dirs, files in os.walk(directory):
        # the data dir holds etcd's WAL and snapshots, never a PEM file we put there
        dirs[:] = [d for d in dirs if (Path(root) / d).resolve() != skip]
        for f in files:
            path = Path(root) / f
            try:
                if path.stat().st_size > MAX_KEY_FILE_SIZE:
                    continue  # e.g. etcd.log: far bigger than any PEM key
                data = path.read_bytes()
            except OSError:
                continue
            digests[str(path)] = sha256_hex(data)
            if f.endswith(".pem"):
                pems[str(path)] = data
    return MemberFiles(name, digests, pems)


async def gather_hosts(spec: ClusterSpec, ws: Workspace) -> PkiFacts:
    """The workspace PKI plus every member's files over SSH (hosts mode), read concurrently."""
    from etcdforge.runtime.factory import connected

    ca, ca_key, items = gather_workspace(spec, ws)
    paths = layout.member_paths(spec)
    async with connected(spec, ws) as hosts:
        results = await asyncio.gather(*(gather_host(hosts[m.name], m, paths) for m in spec.members))
    members: list[MemberFiles] = []
    for host_items, files in results:
        items += host_items
        members.append(files)
    return pki_facts(ws, ca, ca_key, items, members)


# One session per host for the whole check (a session costs a login on the host; reading file by file
# took ~18 of them). Private keys never leave the host: only the public half of each (DER, base64) does.
# Arguments: $1 the directory to scan for the CA key, $2 the scan's size limit in KiB, then the member's
# PKI files, each ``c:PATH`` (a certificate) or ``k:PATH`` (a private key). Output: per file an
# "@file PATH" section (``missing``; ``stat-error MSG``; or ``meta MODE OWNER GROUP`` then ``data
# BASE64`` for a certificate, ``pub BASE64`` for a key, or ``unreadable MSG``), then ``@scan`` with one
# ``SHA256 PUB-or-- PATH`` line per small regular file under $1 (PUB: the public half, for a PEM file
# that holds a private key), ``@find STATUS``, ``@end``. stat -L: a key that is a symlink is judged by
# what etcd reads, not the link's 0777.
CHECK_SCRIPT = """\
etc=$1 maxk=$2
shift 2
pub() { openssl pkey -passin pass: -in "$1" -pubout -outform DER 2>/dev/null | base64 -w 0; }
command -v openssl >/dev/null 2>&1 && ssl=1 || ssl=
for a do
  p=${a#?:}
  echo "@file $p"
  if [ ! -e "$p" ]; then echo missing; continue; fi
  if ! st=$(stat -L -c '%a %U %G' -- "$p" 2>&1); then echo "stat-error $st"; continue; fi
  echo "meta $st"
  if [ ! -f "$p" ]; then echo "unreadable not a regular file"; continue; fi
  if [ ! -r "$p" ]; then echo "unreadable permission denied"; continue; fi
  case $a in
  k:*)
    if [ -z "$ssl" ]; then echo "unreadable openssl is not installed on the host (keys are checked there)"
    elif k=$(pub "$p") && [ -n "$k" ]; then echo "pub $k"
    else echo "unreadable not a private key openssl can read"; fi ;;
  *)
    if data=$(base64 -w 0 < "$p"); then echo "data $data"; else echo "unreadable read failed"; fi ;;
  esac
done
echo @scan
list=$(find "$etc" -type f -size "-${maxk}k" 2>/dev/null)
found=$?
[ -d "$etc" ] || found=0
ca_key="$etc/pki/ca-key.pem"
if [ -f "$ca_key" ]; then list=$(printf '%s\\n%s' "$list" "$ca_key" | sort -u); fi
printf '%s\\n' "$list" | while IFS= read -r p; do
  [ -n "$p" ] && [ -f "$p" ] || continue
  h=$(sha256sum < "$p") || continue
  b=-
  if [ -n "$ssl" ] && grep -q 'PRIVATE KEY' "$p" 2>/dev/null; then b=$(pub "$p"); [ -n "$b" ] || b=-; fi
  printf '%s %s %s\\n' "${h%% *}" "$b" "$p"
done
echo "@find $found"
echo @end
"""


def parse_check_output(
    output: str, host: str, wanted: Sequence[str], etc_dir: str
) -> tuple[dict[str, FileFacts], MemberFiles]:
    """The check script's output -> (FileFacts per wanted path, the scan of ``etc_dir``) for ``host``.

    ``FileFacts.path`` is ``HOST:PATH`` so a finding names the member and the file. Raises
    :class:`ValueError` if the output was cut short.
    """
    sections = parse_observation(output)
    read: dict[str, FileFacts] = {}
    for path in wanted:
        shown = f"{host}:{path}"
        lines = sections.get(f"file {path}")
        if not lines:
            raise ValueError(f"no report for {path}")
        kind, _, rest = lines[0].partition(" ")
        if kind == "missing":
            read[path] = FileFacts(shown, None)
        elif kind == "stat-error":
            read[path] = FileFacts(shown, None, problem=f"cannot stat: {rest}")
        elif kind == "meta" and len(lines) == 2:
            mode_s, owner, group = rest.split(" ", 2)
            mode = int(mode_s, 8)
            what, _, body = lines[1].partition(" ")
            if what == "data":
                read[path] = FileFacts(shown, base64.b64decode(body), mode, owner, group)
            elif what == "pub":
                digest = sha256_hex(base64.b64decode(body))
                read[path] = FileFacts(shown, None, mode, owner, group, public_sha256=digest)
            else:
                read[path] = FileFacts(shown, None, mode, owner, group, problem=f"unreadable: {body}")
        else:
            # never the lines themselves: a key file's base64 would reach an error message
            raise ValueError(f"unexpected report for {path} ({len(lines)} line(s), starting {kind[:20]!r})")
    digests: dict[str, str] = {}
    public: dict[str, str] = {}
    for line in sections.get("scan", []):
        digest, content, path = line.split(" ", 2)
        digests[path] = digest
        if content != "-":
            public[path] = sha256_hex(base64.b64decode(content))
    status = next((k.split(" ", 1)[1] for k in sections if k.startswith("find ")), "0")
    problem = None if status == "0" else f"could not scan all of {etc_dir} (find exited {status})"
    return read, MemberFiles(host, digests, public_keys=public, problem=problem)


async def gather_host(
    host: Host,
    member: MemberSpec,
    paths: MemberPaths,
    *,
    etc_dir: str | None = None,
    key_owner: str | None = HOST_KEY_OWNER,
) -> tuple[list[CertItem], MemberFiles]:
    """One member's installed files on ``host`` and a scan of ``etc_dir`` (default /etc/etcd) for the CA
    key, in ONE command (one SSH session). ``ETC_DIR/pki/ca-key.pem`` is always looked at, even if ``find``
    fails on the host.
    """
    etc = etc_dir if etc_dir is not None else layout.ETC_DIR
    wanted = _paths(paths)
    keys = {paths.server_key, paths.peer_key}
    tagged = [f"{'k' if p in keys else 'c'}:{p}" for p in wanted]
    argv = ["sh", "-c", CHECK_SCRIPT, "sh", etc, str(MAX_KEY_FILE_SIZE // 1024), *tagged]
    result = await host.run(argv, timeout=60)
    try:
        read, files = parse_check_output(result.stdout.decode(errors="replace"), host.name, wanted, etc)
    except ValueError as exc:
        raise HostError(f"pki check on {host.name} gave unreadable output: {exc}", host=host.name) from None
    items = _member_items(member.name, member, paths, read, key_owner)
    return items, MemberFiles(
        member.name, files.digests, public_keys=files.public_keys, problem=files.problem
    )
