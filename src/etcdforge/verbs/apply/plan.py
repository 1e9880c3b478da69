"""Plan ``apply`` for real hosts (pure): from the spec, the desired files and what was observed.

Safety rules enforced here and tested as pure code:

- a data dir is never wiped; a member with data that the running cluster does not know (another
  cluster's, or a removed member's) is refused unless ``force``;
- a new cluster starts all members together (``--no-block``): etcd reports READY only after quorum;
- a running cluster changes one member at a time: each restart is followed by a health gate over the
  whole cluster, followers first, and the leader last after leadership was handed to a restarted follower;
- a renewed leaf certificate is written in place without a restart (etcd reloads it per handshake);
  config, unit, binary and CA changes need a restart;
- the CA key is not among any host's files (``layout.desired_files`` cannot produce it), and a
  copy of it found on a member (a hand-built cluster's) is deleted once the control PKI holds the same key;
- a member running etcd with another argv than our unit's (a hand-written unit) is restarted under ours,
  one at a time like any other change; a data dir that such a member wrote as root is handed to the etcd
  user while that member is stopped;
- production deploys refuse etcd 3.5.0–3.5.2 and versions below the production minimums.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from etcdforge import binaries, hostpaths, layout, render, topology
from etcdforge import versions as version_graph
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView
from etcdforge.observe.hosts import HostObserved
from etcdforge.plan import (
    FetchRelease,
    HostCommand,
    MoveLeader,
    Plan,
    PutFile,
    RestartMember,
    StartMembers,
    Step,
    UploadFile,
    WaitHealthy,
)
from etcdforge.spec import ClusterSpec


@dataclass(frozen=True)
class BinarySource:
    """Where the hosts' etcd comes from, resolved on the control machine.

    upload: ``local_path``/``sha256``/``version`` of the local binary; download: ``url``, tarball
    ``tarball_sha256``, ``cache_dir`` and, if already fetched, the extracted binary's ``sha256``.
    """

    kind: str  # "system" | "upload" | "download"
    local_path: str | None = None
    sha256: str | None = None
    version: str | None = None
    url: str | None = None
    tarball_sha256: str | None = None
    cache_dir: str | None = None
    #: sha256 of each tool beside the binary (etcdctl, etcdutl; known once the release is local)
    tools: tuple[tuple[str, str], ...] = ()

    def tool_sha256(self, tool: str) -> str | None:
        if tool == "etcd":
            return self.sha256
        return dict(self.tools).get(tool)


def _dirs(spec: ClusterSpec) -> tuple[tuple[str, int, str, str], ...]:
    u = layout.ETCD_USER
    backups = (
        ((layout.BACKUP_LIB_DIR, 0o755, "root", "root"), (spec.backup.on_members.dir, 0o700, "root", "root"))
        if spec.backup.on_members is not None
        else ()
    )
    return (
        (layout.ETC_DIR, 0o755, "root", "root"),
        (layout.WANTS_DIR, 0o755, "root", "root"),
        (layout.PKI_DIR, 0o750, "root", u),
        (layout.data_dir(spec), 0o700, u, u),
        *backups,
    )


def managed_dirs(spec: ClusterSpec) -> tuple[str, ...]:
    return tuple(d for d, _, _, _ in _dirs(spec))


def _diff(old: bytes | None, new: bytes, path: str) -> str:
    if old is None:
        return ""
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True),
        new.decode(errors="replace").splitlines(keepends=True),
        fromfile=f"{path} (on host)",
        tofile=f"{path} (wanted)",
    )
    return "".join(lines)


def _version_tuple(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        major, minor, patch = (int(p) for p in text.split("."))
    except ValueError:
        return None
    return (major, minor, patch)


def _check_host_paths(
    spec: ClusterSpec, hosts: Mapping[str, HostObserved], names: Sequence[str], *, force: bool
) -> None:
    """Refuse, before any step, a guarded directory that is not what the spec's path says.

    A symlink, a directory below a world-writable or non-root parent, or an etcd binary that others
    could replace is refused outright; a populated data dir holding somebody else's files only with
    ``force``. Every problem on every host is listed, so one run shows them all.
    """
    problems: list[str] = []
    for n in names:
        h = hosts[n]
        for path, facts in h.guards.items():
            problems += [f"{n}: {p}" for p in hostpaths.host_path_problems(path, facts)]
            foreign = hostpaths.foreign_data(path, facts)
            if foreign and not force:
                problems.append(f"{n}: {foreign} (pass --force if that is really etcd's)")
        if spec.etcd.source == "system" and h.binary_guard:
            problems.append(
                f"{n}: {layout.binary_path(spec)} is not run as root: "
                + "; ".join(hostpaths.binary_problems(h.binary_guard))
            )
    if problems:
        raise PlanError(
            "; ".join(problems),
            hint="nothing was changed on any host; fix the paths on the hosts or in cluster.yaml",
        )


def _check_binary(spec: ClusterSpec, hosts: Mapping[str, HostObserved], source: BinarySource) -> None:
    if source.kind == "system":
        missing = [m for m, h in hosts.items() if h.binary_version is None]
        if missing:
            raise PlanError(
                f"no working etcd at {layout.binary_path(spec)} on {', '.join(sorted(missing))}",
                hint="install it there (apt-get install etcd-server) or set etcd.source: upload or download",
            )
        versions = {m: h.binary_version for m, h in hosts.items()}
    else:
        versions = {m: source.version for m in hosts}
    for member, text in sorted(versions.items()):
        version = _version_tuple(text)
        if version is None:
            continue  # a download not fetched yet: checked after the fetch
        problem = binaries.version_problem(version, production=True)
        if problem:
            raise PlanError(f"{member}: {problem}")
        if spec.etcd.version and text != spec.etcd.version:
            raise PlanError(f"{member} has etcd {text}, but the spec asks for {spec.etcd.version}")
    # a new release replacing the installed one follows the upgrade rules (one minor at a time, a
    # minimum patch first, no downgrade)
    new = _version_tuple(source.version or "") if source.kind != "system" else None
    installed = [v for h in hosts.values() if (v := _version_tuple(h.binary_version or "")) is not None]
    if new is not None and installed and new != min(installed):
        path = version_graph.check_path(min(installed), new, production=True)
        if path.refused:
            raise PlanError(
                f"etcd {version_graph.show(min(installed))} → {version_graph.show(new)}: {path.refused}",
                hint="nothing was changed; see `etcdforge upgrade --help` for the version rules",
            )


def plan_apply(
    spec: ClusterSpec,
    desired: Mapping[str, Sequence[layout.DesiredFile]],
    hosts: Mapping[str, HostObserved],
    cluster: ClusterView,
    source: BinarySource,
    *,
    pending_paths: Mapping[str, Mapping[str, str]] | None = None,
    force: bool = False,
    timeout: float = 120.0,
    only: Sequence[str] | None = None,
    ca_key_ids: frozenset[str] = frozenset(),
) -> Plan:
    """Every step ``apply`` takes, in order; an up-to-date cluster gives an empty plan.

    ``pending_paths`` marks, per member, files whose certificate the control PKI is about to (re)issue
    (destination -> workspace source): they are planned as changed, their content a deferred value read
    from the workspace when the step runs. ``only`` restricts the
    plan to those members (a member being added). ``ca_key_ids`` recognise the control CA key (by file or
    public-key digest): a stray file on a member holding that key, in any encoding, is deleted (others are
    only warned about).
    """
    names = list(only) if only is not None else [m.name for m in spec.members]
    _check_host_paths(spec, hosts, names, force=force)
    _check_binary(spec, hosts, source)
    pending = pending_paths or {}
    steps: list[Step] = []
    warnings: list[str] = list(spec.warnings())
    restart_needed: dict[str, list[str]] = {}
    # only what is not already etcd's, and never across a mount point (the observe uses -xdev as well);
    # -execdir: chown runs in each file's own directory on its base name, so a directory swapped for a
    # symlink between find's walk and the chown cannot lead it elsewhere
    chown_data = (
        "find", layout.data_dir(spec), "-xdev", "(", "!", "-user", layout.ETCD_USER, "-o", "!", "-group",
        layout.ETCD_USER, ")", "-execdir", "chown", "-h", f"{layout.ETCD_USER}:{layout.ETCD_USER}", "{}", "+",
    )  # fmt: skip

    # --- data safety first: nothing is changed on any host if a data dir is suspicious -----------
    with_data = [n for n in names if hosts[n].has_data]
    if cluster.reachable:
        strangers = [
            n
            for n in with_data
            if not cluster.knows_peer_url(topology.peer_url(spec, spec.member(n)))
            and cluster.member_id(n) is None
        ]
        if strangers and not force:
            raise PlanError(
                f"{', '.join(strangers)}: the data dir holds data, but the running cluster does not know "
                "this member (data of another cluster or of a removed member)",
                hint="move the data dir away, or pass --force to keep it and go on",
            )
    elif with_data and len(with_data) != len(names) and not force:
        without = [n for n in names if n not in with_data]
        raise PlanError(
            f"{', '.join(without)} have no data while {', '.join(with_data)} do, and the cluster does not "
            "answer: starting them would bootstrap a second cluster",
            hint="restore their data dirs, or add them with `etcdforge member add` once the cluster is up",
        )

    # --- a port taken by something else would only show up as a unit that never starts -------------
    for n in names:
        if hosts[n].running:
            continue
        member = spec.member(n)
        wanted = {spec.etcd.client_port, spec.etcd.peer_port}
        ours = {member.address, "0.0.0.0", "*", "::", "127.0.0.1"}
        for address, port, process in hosts[n].listeners:
            if port in wanted and address in ours:
                raise PlanError(
                    f"{n}: port {port} on {address} is already in use by {process}; "
                    "etcd could not start there",
                    hint="stop that service or change etcd.client_port/peer_port",
                )

    # --- preparation, all hosts concurrently ----------------------------------------------------------
    for n in names:
        if not hosts[n].etcd_user:
            steps.append(
                Step(
                    f"{n}/create-user",
                    n,
                    HostCommand(
                        n,
                        (
                            "useradd",
                            "--system",
                            "--user-group",
                            "--no-create-home",
                            "--home-dir",
                            layout.data_dir(spec),
                            "--shell",
                            "/usr/sbin/nologin",
                            layout.ETCD_USER,
                        ),
                    ),
                    f"no '{layout.ETCD_USER}' system user",
                    group="prepare",
                )
            )
    for n in names:
        for path, mode, owner, grp in _dirs(spec):
            dir_state = hosts[n].dirs.get(path)
            if dir_state != (mode, owner, grp):
                why = (
                    "missing" if dir_state is None else f"is {dir_state[0]:04o} {dir_state[1]}:{dir_state[2]}"
                )
                steps.append(
                    Step(
                        f"{n}/dir:{path}",
                        n,
                        HostCommand(n, ("install", "-d", "-m", f"{mode:04o}", "-o", owner, "-g", grp, path)),
                        f"{path} {why}, want {mode:04o} {owner}:{grp}",
                        group="prepare",
                    )
                )

    if source.kind == "download" and source.sha256 is None:
        assert source.url and source.tarball_sha256 and source.cache_dir
        steps.append(
            Step(
                "control/fetch-etcd",
                "local",
                FetchRelease(source.url, source.tarball_sha256, source.cache_dir, source.version),
                f"etcd {source.version} is not in the local cache",
            )
        )
    if source.kind in ("upload", "download"):
        assert source.local_path is not None
        target = layout.binary_path(spec)
        for n in names:
            if source.sha256 is None or hosts[n].binary_sha256 != source.sha256:
                why = "missing" if hosts[n].binary_sha256 is None else "differs"
                for tool in ("etcd", "etcdctl", "etcdutl"):
                    steps.append(
                        Step(
                            f"{n}/install-{tool}",
                            n,
                            UploadFile(
                                n,
                                f"{source.local_path.rsplit('/', 1)[0]}/{tool}",
                                f"{target.rsplit('/', 1)[0]}/{tool}",
                                0o755,
                                source.tool_sha256(tool),
                            ),
                            f"etcd {source.version or ''} binary {why}".replace("  ", " "),
                            group="prepare",
                        )
                    )
                if hosts[n].running:
                    restart_needed.setdefault(n, []).append("binary changed")

    unit_changed: list[str] = []
    backup_changed: list[str] = []
    for n in names:
        for f in desired[n]:
            state = hosts[n].files.get(f.path)
            deferred = pending.get(n, {}).get(f.path)
            is_pending = deferred is not None
            if is_pending:
                why = "certificate will be (re)issued"
            elif state is None:
                why = "missing"
            elif state.sha256 != _sha(f.content):
                why = "content differs"
            elif (state.mode, state.owner, state.group) != (f.mode, f.owner, f.group):
                why = (
                    f"is {state.mode:04o} {state.owner}:{state.group}, want {f.mode:04o} {f.owner}:{f.group}"
                )
            else:
                continue
            note = why
            unit_path = hosts[n].unit_path
            if f.path == layout.UNIT and unit_path and unit_path != layout.UNIT:
                note += f"; overrides {unit_path} (left in place, no longer used)"
            steps.append(
                Step(
                    f"{n}/file:{f.path}",
                    n,
                    PutFile(
                        n,
                        f.path,
                        b"" if deferred else f.content,
                        f.mode,
                        f.owner,
                        f.group,
                        f.secret,
                        diff=""
                        if f.secret or deferred
                        else _diff(hosts[n].texts.get(f.path), f.content, f.path),
                        source=deferred,
                    ),
                    note,
                    group="prepare",
                )
            )
            # A running member read its config and CA at start: only a *different* content (not a
            # restored file or a mode fix) means it runs with something other than what we want.
            changed = is_pending or why == "content differs"
            old_text = hosts[n].texts.get(f.path)
            if (
                f.path == layout.CONFIG
                and old_text is not None
                and render.differs_only_in_initial_keys(old_text, f.content)
            ):
                changed = (
                    False  # only initial-* keys (membership changed): etcd ignores them once it has data
                )
            if f.effect == "reload":
                unit_changed.append(n)
            if f.effect == "backup":
                backup_changed.append(n)
            if f.effect in ("restart", "reload") and hosts[n].running and changed:
                restart_needed.setdefault(n, []).append(f"{f.path} {why}")

    for n in names:
        h = hosts[n]
        if h.running and h.main_argv is not None and h.main_argv != layout.unit_argv(spec):
            shown = " ".join(h.main_argv[:2]) + (" …" if len(h.main_argv) > 2 else "")
            started_by = f" from {h.unit_path}" if h.unit_path and h.unit_path != layout.UNIT else ""
            restart_needed.setdefault(n, []).append(f"runs `{shown}`{started_by}, not etcdforge's unit")
        for path, ids in sorted(h.strays.items()):
            if set(ids.split()) & ca_key_ids:  # the same key, in whatever encoding
                steps.append(
                    Step(
                        f"{n}/remove:{path}",
                        n,
                        HostCommand(n, ("rm", "-f", "--", path)),
                        "the CA private key must not be on a member (the control machine keeps it)",
                        group="prepare",
                    )
                )
            else:
                warnings.append(
                    f"{n}: {path} looks like a CA private key but is not this cluster's CA key; "
                    "left in place — move it off the member"
                )
        if h.data_foreign_owned and not (h.running and n in restart_needed):
            steps.append(
                Step(
                    f"{n}/chown-data",
                    n,
                    HostCommand(n, chown_data),
                    f"{layout.data_dir(spec)} holds files not owned by {layout.ETCD_USER}",
                    group="prepare",
                )
            )

    for n in dict.fromkeys([*unit_changed, *backup_changed]):
        steps.append(
            Step(
                f"{n}/daemon-reload",
                n,
                HostCommand(n, ("systemctl", "daemon-reload")),
                "unit changed",
                "prepare",
            )
        )
    for n in dict.fromkeys(backup_changed):
        # the scheduled backup's timer: enabled, and (re)started so a new interval counts from now
        timer = layout.BACKUP_TIMER_NAME
        steps.append(
            Step(
                f"{n}/backup-timer",
                n,
                HostCommand(
                    n, ("sh", "-c", 'systemctl enable --quiet "$1" && systemctl restart "$1"', "sh", timer)
                ),
                f"scheduled backups every {spec.backup.on_members.every if spec.backup.on_members else '?'}",
                "prepare",
            )
        )
    for n in names:
        # a newly written unit is not enabled yet, whatever state a distribution's unit had before
        if hosts[n].unit_file_state != "enabled" or n in unit_changed:
            steps.append(
                Step(
                    f"{n}/enable",
                    n,
                    HostCommand(n, ("ln", "-sfT", layout.UNIT, layout.WANTS_LINK)),
                    "start etcd at boot",
                    group="prepare",
                )
            )

    # --- start / restart ------------------------------------------------------------------------------
    stopped = [n for n in names if not hosts[n].running]
    if stopped:
        why = "new cluster: all members start together" if not with_data else "not running"
        steps.append(Step("cluster/start", "cluster", StartMembers(tuple(stopped)), why))
        steps.append(
            Step(
                "cluster/wait-healthy",
                "cluster",
                WaitHealthy(tuple(names), timeout),
                "every member must answer a linearizable read",
            )
        )
    rolling = [n for n in names if n in restart_needed and n not in stopped]
    if rolling:
        leader = next(
            (n for n in names if cluster.leader_id is not None and cluster.member_id(n) == cluster.leader_id),
            None,
        )
        order = [n for n in rolling if n != leader] + ([leader] if leader in rolling else [])
        for i, n in enumerate(order):
            if n == leader and i > 0:
                steps.append(
                    Step(
                        f"{n}/move-leader",
                        n,
                        MoveLeader(order[0]),
                        f"{n} leads; hand over before restarting it",
                    )
                )
            foreign = hosts[n].data_foreign_owned
            reasons = restart_needed[n] + (
                [f"{layout.data_dir(spec)} handed to {layout.ETCD_USER} while stopped"] if foreign else []
            )
            steps.append(
                Step(
                    f"{n}/restart",
                    n,
                    RestartMember(n, timeout, before_start=(chown_data,) if foreign else ()),
                    "; ".join(reasons) + " (one member at a time, health-gated)",
                )
            )
    return Plan(verb="apply", steps=tuple(steps), warnings=tuple(warnings))


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
