"""Plan a rolling upgrade (pure): the version graph's verdict, the preflight, and per member — followers
first, the leader last after it handed leadership over — switch the binary (the previous one kept),
wait until the whole cluster is healthy, check the member reports the new version and serves a canary
written through it. The run ends when the cluster version reaches the new minor; the spec follows.

Preflight (refused in one line): every member serving (but the one a killed run left stopped mid-switch,
which the plan brings back first), no alarm, no learner, no membership change in flight, free disk for a
safety snapshot, settings the target removed (left out of its config), the new binary's own --version.
"""

from __future__ import annotations

from dataclasses import dataclass

from etcdforge import versions
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView
from etcdforge.plan import (
    CheckMember,
    MoveLeader,
    Plan,
    RemoveFile,
    Step,
    SwitchBinary,
    WaitClusterVersion,
    WriteFile,
)

#: the key each upgraded member writes and reads back through itself
CANARY_KEY = "/etcdforge/upgrade-canary"


@dataclass(frozen=True)
class UpgradeInputs:
    view: ClusterView
    target: versions.Version
    #: the new binary as a member's service runs it (local: a path here; hosts: where it is staged)
    binary: str
    #: the version the binary itself reported (--version)
    binary_version: versions.Version
    production: bool
    allow_unsafe: bool = False
    downgrade: bool = False
    #: the member a killed run was switching (the record), which may be down
    resuming: str | None = None
    membership_change: bool = False
    free_bytes: int | None = None
    timeout: float = 120.0
    record_path: str = ""
    spec_path: str = ""
    spec_after: bytes = b""
    #: per member: (config path, config rendered for the target) when it differs from the current one
    configs: tuple[tuple[str, str, bytes], ...] = ()
    #: etcd's authentication is on (None: not read)
    auth_enabled: bool | None = None


def record(target: versions.Version, binary: str, member: str) -> bytes:
    import json

    return json.dumps({"target": versions.show(target), "binary": binary, "member": member}).encode() + b"\n"


def plan_upgrade(inp: UpgradeInputs, safety: tuple[Step, ...] = ()) -> tuple[Plan, tuple[str, ...], str]:
    """(plan, warnings, note). An empty plan: nothing to do (``note`` says why)."""
    view, target = inp.view, inp.target
    if inp.binary_version != target:
        raise PlanError(
            f"{inp.binary} is etcd {versions.show(inp.binary_version)}, not {versions.show(target)}",
            hint="pass --etcd-bin with the release you upgrade to",
        )
    down = [m.name for m in view.members if not m.serving and m.name != inp.resuming]
    if down:
        raise PlanError(
            f"an upgrade restarts every member and needs all of them healthy first: {', '.join(down)} "
            f"{'is' if len(down) == 1 else 'are'} not",
            hint="`etcdforge health` shows why; fix it (or `member replace` it) first",
        )
    if any(m.is_learner for m in view.members) or inp.membership_change:
        raise PlanError(
            "a membership change is in flight",
            hint="finish it (re-run the `member` command) before upgrading",
        )
    if view.alarms:
        active = ", ".join(f"{a} on {who}" for who, a in view.alarms)
        raise PlanError(f"an alarm is active ({active})", hint="`etcdforge alarms` and `space recover` first")
    running = {m.name: versions.parse(m.version) for m in view.members if m.version}
    if not running:
        raise PlanError("no member reports its version")
    current = min(running.values())
    path = versions.check_path(
        current, target, production=inp.production, allow_unsafe=inp.allow_unsafe, downgrade=inp.downgrade
    )
    if path.refused:
        raise PlanError(path.refused)
    if inp.auth_enabled and current[:2] == (3, 4) and target[:2] >= (3, 5):
        # 3.5 changed the auth entries of the raft log: a mixed 3.4/3.5 cluster with auth on is not
        # supported (etcd's upgrade guide)
        raise PlanError(
            "etcd does not support a rolling upgrade from 3.4 to 3.5 with auth on",
            hint="set auth.enabled: false and run `apply`/`up`, upgrade, then turn auth on again",
        )
    ahead = [n for n, v in running.items() if v > target and not inp.downgrade]
    if ahead:
        raise PlanError(f"{', '.join(ahead)} already run a release newer than {versions.show(target)}")
    todo_names = [m.name for m in view.members if running.get(m.name) != target or m.name == inp.resuming]
    if not todo_names:
        steps: list[Step] = []
        if inp.resuming is not None or inp.spec_after:
            steps = _finish(inp)
        return Plan("upgrade", tuple(steps)), path.warnings, f"every member runs etcd {versions.show(target)}"
    biggest = max((m.db_size for m in view.members), default=0)
    if inp.free_bytes is not None and inp.free_bytes < 2 * biggest + 64 * 2**20:
        raise PlanError(
            f"{inp.free_bytes // 2**20} MiB free where the safety snapshot goes; it needs about "
            f"{(2 * biggest) // 2**20 + 64} MiB",
        )
    leader = view.leader.name if view.leader is not None else None
    order = (
        [n for n in todo_names if n == inp.resuming]
        + [n for n in todo_names if n not in (inp.resuming, leader)]
        + [n for n in todo_names if n == leader and n != inp.resuming]
    )
    urls = {m.name: m.url for m in view.members}
    configs = {name: (path_, content) for name, path_, content in inp.configs}
    steps = list(safety)
    done = [m.name for m in view.members if m.name not in todo_names]
    for name in order:
        steps.append(
            Step(
                f"upgrade/record:{name}",
                "local",
                WriteFile(inp.record_path, record(target, inp.binary, name), 0o600),
                f"{name} is next (a re-run resumes here)",
            )
        )
        if name == leader and len(view.members) > 1:
            to = done[-1] if done else next(n for n in urls if n != name)
            steps.append(Step(f"{name}/move-leader", name, MoveLeader(to), f"{name} leads; hand over first"))
        if name in configs:
            cfg_path, content = configs[name]
            steps.append(
                Step(
                    f"{name}/write-config",
                    name,
                    WriteFile(cfg_path, content),
                    "settings the new release removed",
                )
            )
        steps.append(
            Step(
                f"{name}/switch-binary",
                name,
                SwitchBinary(name, inp.binary, inp.timeout),
                f"etcd {versions.show(target)} (the previous binary kept); then the whole cluster healthy",
            )
        )
        steps.append(
            Step(
                f"{name}/check",
                "cluster",
                CheckMember(name, urls[name], versions.show(target), CANARY_KEY),
                "it reports the new version and serves a canary written through it",
            )
        )
        done.append(name)
    steps += _finish(inp)
    note = f"{len(order)} member(s) to etcd {versions.show(target)} ({path.kind})"
    return Plan("upgrade", tuple(steps)), path.warnings, note


def _finish(inp: UpgradeInputs) -> list[Step]:
    url = next(m.url for m in inp.view.members if m.serving or m.name == inp.resuming)
    minor = f"{inp.target[0]}.{inp.target[1]}"
    steps = [
        Step(
            "cluster/wait-version",
            "cluster",
            WaitClusterVersion(url, minor, inp.timeout),
            f"etcd raises the cluster version to {minor} once every member runs it",
        )
    ]
    if inp.spec_after:
        steps.append(
            Step(
                "workspace/write-spec",
                "local",
                WriteFile(inp.spec_path, inp.spec_after),
                "the spec follows etcd",
            )
        )
    steps.append(Step("upgrade/done", "local", RemoveFile(inp.record_path), "upgraded"))
    return steps
