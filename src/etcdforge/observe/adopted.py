"""What ``adopt`` reads on a hand-built cluster's hosts, and the pure checks that decide whether it fits.

Per host, two read-only commands over one connection:

1. :data:`UNIT_SCRIPT`: the etcd unit (``systemctl show``: state, FragmentPath, MainPID), the running
   process's argv (``/proc/PID/cmdline``) and ``ETCD_*`` environment, and the unit file's text (whose
   ``ExecStart`` is the fallback when etcd is not running);
2. :data:`FILES_SCRIPT`: the ``*.pem``/``*.json`` files of the directories the flags point at — the
   content of certificates, JSON and CA keys, never of the members' own private keys.

:func:`parse_flags` turns an argv (plus environment) into etcd's flags as Go's flag package reads them;
:func:`check_members` compares what every host runs with the ``--member NAME=ADDRESS`` list and returns
the cluster's settings, or raises :class:`PlanError` with one line naming the host and the problem.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from etcdforge.errors import PlanError
from etcdforge.observe.hosts import parse_observation

UNIT_SCRIPT = """\
unit=$1
echo @show
systemctl show "$unit" -p LoadState -p ActiveState -p FragmentPath -p MainPID 2>/dev/null
pid=$(systemctl show "$unit" -p MainPID --value 2>/dev/null)
echo @cmdline
if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r "/proc/$pid/cmdline" ]; then
  base64 -w 0 < "/proc/$pid/cmdline"; echo
else
  echo -
fi
echo @environ
if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r "/proc/$pid/environ" ]; then
  tr '\\0' '\\n' < "/proc/$pid/environ" | grep '^ETCD_' | base64 -w 0; echo
else
  echo -
fi
echo @fragment
frag=$(systemctl show "$unit" -p FragmentPath --value 2>/dev/null)
if [ -n "$frag" ] && [ -f "$frag" ]; then base64 -w 0 < "$frag"; echo; else echo -; fi
echo @end
"""

# $@: directories. Private keys are read only when their name says CA key; others are only listed.
FILES_SCRIPT = """\
for d do
  for f in "$d"/*.pem "$d"/*.json; do
    [ -f "$f" ] || continue
    case "${f##*/}" in
      *ca-key*.pem) ;;
      *-key.pem|*key*.pem) echo "@secret $f"; continue ;;
    esac
    echo "@file $f"
    base64 -w 0 < "$f"; echo
  done
done
echo @end
"""

#: flags that name the same setting in every member and that the spec carries over
TUNING_FLAGS = {
    "heartbeat-interval": "heartbeat_interval_ms",
    "election-timeout": "election_timeout_ms",
    "snapshot-count": "snapshot_count",
    "quota-backend-bytes": "quota_backend_bytes",
    "max-request-bytes": "max_request_bytes",
    "auto-compaction-mode": "auto_compaction_mode",
    "auto-compaction-retention": "auto_compaction_retention",
    "auth-token": "auth_token",
}
#: hardening flags carried into the spec's etcd.tls (or, for the peer filters, replaced: see _tls_flags)
TLS_FLAGS = frozenset(
    {"cipher-suites", "tls-min-version", "peer-cert-allowed-cn", "peer-cert-allowed-hostname"}
)
#: flags etcdforge's layout and config decide itself (read, checked, replaced)
LAYOUT_FLAGS = frozenset({
    "name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
    "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-token", "initial-cluster-state",
    "cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "peer-cert-file", "peer-key-file",
    "peer-trusted-ca-file", "peer-client-cert-auth", "enable-v2", "logger", "log-outputs", "log-level",
    "strict-reconfig-check", "enable-grpc-gateway",
})  # fmt: skip
#: flags whose meaning etcdforge cannot keep: adopting would lose data or change behaviour silently
REFUSED_FLAGS = {
    "config-file": "the member is configured by a --config-file; adopt reads flags",
    "wal-dir": "a separate --wal-dir is not supported by etcdforge's layout (its WAL would be lost)",
    "proxy": "an etcd v2 proxy is not a member",
}
#: Go flag package: booleans take no separate value ("--x true" is "--x" and an argument "true")
BOOL_FLAGS = frozenset({
    "client-cert-auth", "peer-client-cert-auth", "auto-tls", "peer-auto-tls", "strict-reconfig-check",
    "enable-v2", "enable-pprof", "debug", "force-new-cluster", "enable-grpc-gateway", "version",
    "experimental-peer-skip-client-san-verification", "peer-skip-client-san-verification",
    "experimental-initial-corrupt-check", "pre-vote", "socket-reuse-port", "socket-reuse-address",
})  # fmt: skip


@dataclass(frozen=True)
class HostFacts:
    """What one host runs: unit state and file, etcd's argv and flags."""

    member: str
    address: str
    active_state: str
    unit_path: str
    argv: tuple[str, ...]
    from_process: bool  # argv read from the running process (else from the unit's ExecStart)
    flags: Mapping[str, str]


@dataclass(frozen=True)
class AdoptedSettings:
    """The cluster-wide settings every member agrees on."""

    binary: str
    data_dir: str
    token: str
    client_port: int
    peer_port: int
    ca_dir: str
    tuning: Mapping[str, str]
    ignored_flags: tuple[str, ...]
    #: the cluster's TLS hardening, carried into the spec's etcd.tls (cipher_suites, min_version)
    tls: Mapping[str, object] = field(default_factory=dict)
    #: what of it could not be kept (suites etcdforge's policy refuses), said to the user
    tls_notes: tuple[str, ...] = ()


def _b64(lines: Sequence[str]) -> bytes | None:
    text = "".join(lines)
    return None if text in ("", "-") else base64.b64decode(text)


def parse_unit_output(output: str) -> tuple[dict[str, str], tuple[str, ...] | None, dict[str, str], str]:
    """:data:`UNIT_SCRIPT` output -> (systemctl properties, running argv, ETCD_* env, unit file text)."""
    sections = parse_observation(output)
    show: dict[str, str] = {}
    for line in sections.get("show", []):
        key, sep, value = line.partition("=")
        if sep:
            show[key.strip()] = value.strip()
    raw = _b64(sections.get("cmdline", []))
    argv = tuple(p.decode(errors="replace") for p in raw.rstrip(b"\0").split(b"\0")) if raw else None
    env: dict[str, str] = {}
    for line in (_b64(sections.get("environ", [])) or b"").decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    fragment = (_b64(sections.get("fragment", [])) or b"").decode(errors="replace")
    return show, argv, env, fragment


def parse_files_output(output: str) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """:data:`FILES_SCRIPT` output -> ({path: content}, paths of private keys that were not read)."""
    files: dict[str, bytes] = {}
    secrets: list[str] = []
    path: str | None = None
    for line in output.splitlines():
        if line.startswith("@file "):
            path = line[len("@file ") :]
        elif line.startswith("@secret "):
            secrets.append(line[len("@secret ") :])
            path = None
        elif line == "@end":
            break
        elif path is not None:
            files[path] = base64.b64decode(line) if line else b""
            path = None
    return files, tuple(secrets)


def exec_start(unit_text: str) -> tuple[str, ...] | None:
    """The argv of a unit file's (last) ``ExecStart=`` line, with ``\\`` continuations joined."""
    joined = unit_text.replace("\\\n", " ")
    argv: tuple[str, ...] | None = None
    for line in joined.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "ExecStart" and value.strip():
            words = shlex.split(value.strip())
            words[0] = words[0].lstrip("-@+!:")  # systemd's prefixes
            argv = tuple(words)
    return argv


def parse_flags(argv: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """etcd's flags as Go's flag package reads them (``-x``/``--x``, ``=v`` or a separate ``v``;
    booleans only ``=v``); ``ETCD_*`` variables fill flags the command line does not set."""
    flags: dict[str, str] = {}
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break  # Go stops at the first non-flag argument
        name, sep, value = arg.lstrip("-").partition("=")
        if not sep:
            if name in BOOL_FLAGS:
                value = "true"
            elif i < len(args):
                value = args[i]
                i += 1
        flags[name] = value
    for key, value in (env or {}).items():
        if key.startswith("ETCD_"):
            flags.setdefault(key[len("ETCD_") :].lower().replace("_", "-"), value)
    return flags


def _url(value: str, *, what: str, where: str) -> tuple[str, str, int]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if len(urls) != 1:
        raise PlanError(f"{where}: --{what} is {value!r}; etcdforge manages members with exactly one URL")
    parts = urlsplit(urls[0])
    if parts.hostname is None or parts.port is None:
        raise PlanError(f"{where}: --{what} {urls[0]!r} has no host and port")
    return parts.scheme, parts.hostname, parts.port


def check_host(facts: HostFacts) -> tuple[int, int]:
    """One host's own consistency: running, mutual TLS, name and URLs match ``--member``. -> ports."""
    where = f"{facts.member} ({facts.address})"
    if facts.active_state != "active":
        raise PlanError(
            f"{where}: etcd is not running (systemd: {facts.active_state or 'no etcd unit'})",
            hint="adopt needs every member up and healthy; start it, or drop it from --member",
        )
    for flag, why in REFUSED_FLAGS.items():
        if flag in facts.flags:
            raise PlanError(f"{where}: {why}")
    name = facts.flags.get("name")
    if name != facts.member:
        raise PlanError(
            f"{where}: etcd there runs as --name={name}", hint=f"pass --member {name}={facts.address}"
        )
    scheme, host, peer_port = _url(
        facts.flags.get("initial-advertise-peer-urls", ""), what="initial-advertise-peer-urls", where=where
    )
    cscheme, chost, client_port = _url(
        facts.flags.get("advertise-client-urls", ""), what="advertise-client-urls", where=where
    )
    if host != facts.address or chost != facts.address:
        raise PlanError(
            f"{where}: etcd there advertises {host} (peer) and {chost} (client), not {facts.address}"
        )
    if scheme != "https" or cscheme != "https":
        raise PlanError(f"{where}: not a TLS cluster (peer {scheme}://, client {cscheme}://)",
                        hint="etcdforge adopts mutual-TLS clusters only")  # fmt: skip
    for flag in ("client-cert-auth", "peer-client-cert-auth"):
        if facts.flags.get(flag, "false").lower() not in ("true", "1"):
            raise PlanError(f"{where}: --{flag} is off", hint="etcdforge adopts mutual-TLS clusters only")
    for flag in ("trusted-ca-file", "peer-trusted-ca-file", "data-dir"):
        if not facts.flags.get(flag, "").startswith("/"):
            raise PlanError(f"{where}: --{flag} is not set to an absolute path")
    if facts.flags["trusted-ca-file"] != facts.flags["peer-trusted-ca-file"]:
        # etcdforge has one CA for clients and peers: the first member restarted with certificates from
        # the client CA would be refused by peers still trusting another peer CA
        raise PlanError(
            f"{where}: --trusted-ca-file ({facts.flags['trusted-ca-file']}) and --peer-trusted-ca-file "
            f"({facts.flags['peer-trusted-ca-file']}) differ; etcdforge uses one CA for both",
            hint="make both flags name the same CA file on every member first",
        )
    if not facts.argv or not facts.argv[0].startswith("/"):
        raise PlanError(f"{where}: cannot tell which etcd binary runs (argv {' '.join(facts.argv)!r})")
    return client_port, peer_port


def _tls_flags(
    hosts: Sequence[HostFacts], same: Callable[[str, Mapping[str, object]], None]
) -> tuple[dict[str, object], tuple[str, ...]]:
    """The cluster's --cipher-suites and --tls-min-version as the spec's etcd.tls. Suites the policy
    refuses (CBC, RSA key exchange) are dropped with a note; none left means the default AEAD list."""
    from etcdforge.spec import DEFAULT_CIPHER_SUITES, is_aead_suite

    out: dict[str, object] = {}
    notes: list[str] = []
    if any("cipher-suites" in h.flags for h in hosts):
        same("--cipher-suites", {h.member: h.flags.get("cipher-suites") for h in hosts})
        given = [s.strip() for s in hosts[0].flags.get("cipher-suites", "").split(",") if s.strip()]
        kept = [s for s in given if is_aead_suite(s)]
        dropped = [s for s in given if s not in kept]
        if dropped:
            notes.append(f"--cipher-suites: {', '.join(dropped)} not kept (only AEAD ECDHE suites are)")
        out["cipher_suites"] = kept or list(DEFAULT_CIPHER_SUITES)
    if any("tls-min-version" in h.flags for h in hosts):
        same("--tls-min-version", {h.member: h.flags.get("tls-min-version") for h in hosts})
        out["min_version"] = hosts[0].flags.get("tls-min-version", "TLS1.2")
    for flag in ("peer-cert-allowed-cn", "peer-cert-allowed-hostname"):
        values = sorted({h.flags[flag] for h in hosts if flag in h.flags})
        if values:
            # what the filter is for — only peers are peers — the peers' own CA does for every version;
            # the filter itself cannot stay: etcdforge gives each member its own peer certificate (CN the
            # member's name) and etcd reads these keys from a config file only from 3.5.14 on
            notes.append(
                f"--{flag}={','.join(values)} is replaced by a CA of the peers' own: run `etcdforge pki "
                "rotate-ca --peer` right after the first apply (until then any client certificate of the "
                "CA is accepted as a peer)"
            )
    return out, tuple(notes)


def check_members(hosts: Sequence[HostFacts]) -> AdoptedSettings:
    """Every host's checks, then that all members agree on what must be cluster-wide."""
    ports = {h.member: check_host(h) for h in hosts}

    def same(label: str, values: Mapping[str, object]) -> None:
        if len(set(values.values())) > 1:
            shown = ", ".join(f"{m}: {v}" for m, v in values.items())
            raise PlanError(f"the members differ in {label} ({shown})",
                            hint="etcdforge keeps one value for all members; align them first")  # fmt: skip

    same("ports", ports)
    same("etcd binary", {h.member: h.argv[0] for h in hosts})
    same("--data-dir", {h.member: h.flags["data-dir"] for h in hosts})
    same(
        "--initial-cluster-token",
        {h.member: h.flags.get("initial-cluster-token", "etcd-cluster") for h in hosts},
    )
    same("CA directory", {h.member: h.flags["trusted-ca-file"].rsplit("/", 1)[0] for h in hosts})
    tuning: dict[str, str] = {}
    for flag, key in TUNING_FLAGS.items():
        values = {h.member: h.flags[flag] for h in hosts if flag in h.flags}
        if values:
            same(f"--{flag}", {h.member: h.flags.get(flag) for h in hosts})
            tuning[key] = next(iter(values.values()))
    tls, tls_notes = _tls_flags(hosts, same)
    metrics = {h.member: _loopback_metrics_port(h.flags.get("listen-metrics-urls", "")) for h in hosts}
    carried = set()
    if all(port is not None for port in metrics.values()):
        same("the metrics port", metrics)
        tuning["metrics_port"] = str(next(iter(metrics.values())))
        carried.add("listen-metrics-urls")
    ignored = sorted(
        {
            f
            for h in hosts
            for f in h.flags
            if f not in LAYOUT_FLAGS and f not in TUNING_FLAGS and f not in TLS_FLAGS and f not in carried
        }
    )
    first = hosts[0]
    client_port, peer_port = ports[first.member]
    return AdoptedSettings(
        binary=first.argv[0],
        data_dir=first.flags["data-dir"].rstrip("/") or "/",
        token=first.flags.get("initial-cluster-token", "etcd-cluster"),
        client_port=client_port,
        peer_port=peer_port,
        ca_dir=first.flags["trusted-ca-file"].rsplit("/", 1)[0],
        tuning=tuning,
        ignored_flags=tuple(ignored),
        tls=tls,
        tls_notes=tls_notes,
    )


def _loopback_metrics_port(urls: str) -> int | None:
    """The port of a plain-http loopback ``--listen-metrics-urls`` (what the spec's metrics_port renders);
    None for anything else (https, a routable address, several URLs: reported as not carried)."""
    from urllib.parse import urlsplit

    parts = [u.strip() for u in urls.split(",") if u.strip()]
    if len(parts) != 1:
        return None
    url = urlsplit(parts[0])
    try:
        port = url.port
    except ValueError:
        return None
    if url.scheme != "http" or port is None or not (url.hostname or "").startswith("127."):
        return None
    return port


def check_cluster(
    settings: AdoptedSettings,
    members: Sequence[tuple[str, str]],
    listed: Sequence[tuple[str, tuple[str, ...], bool]],
    unhealthy: Sequence[str],
) -> None:
    """What etcd says (``listed``: name, peer URLs, learner) against ``--member``; all must be healthy."""
    want = {name: f"https://{address}:{settings.peer_port}" for name, address in members}
    have = {name: urls for name, urls, _ in listed}
    unstarted = [urls for name, urls, _ in listed if not name]
    if unstarted:
        raise PlanError(f"the cluster has a member that never started ({', '.join(unstarted[0])})",
                        hint="finish or undo that `member add` first")  # fmt: skip
    learners = [name for name, _, learner in listed if learner]
    if learners:
        raise PlanError(f"{', '.join(learners)} is a learner", hint="promote or remove it first")
    missing = sorted(set(have) - set(want))
    if missing:
        raise PlanError(
            f"the cluster also has {', '.join(missing)}, which --member does not list",
            hint="pass every member: --member NAME=ADDRESS for each",
        )
    extra = sorted(set(want) - set(have))
    if extra:
        raise PlanError(f"{', '.join(extra)} is not a member of the running cluster")
    for name, url in want.items():
        if tuple(have[name]) != (url,):
            raise PlanError(f"{name}: the cluster knows its peer URLs as {', '.join(have[name])}, not {url}")
    if unhealthy:
        raise PlanError(f"{', '.join(unhealthy)} did not answer", hint="adopt a healthy cluster only")
