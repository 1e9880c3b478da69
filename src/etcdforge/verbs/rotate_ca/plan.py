"""Plan the phases of ``pki rotate-ca`` (pure; see :mod:`etcdforge.pki.rotation` for the phases).

Safety rules, tested as pure code:

* a phase starts only when every member of the spec is a healthy voter (``check_ready``);
* the two trust phases restart one member at a time, each restart followed by a health gate over the
  whole cluster; followers first, the leader last after leadership moved to an already restarted member;
* after each member's restart the record is written, so a re-run restarts only the members not yet done
  (a member whose file was replaced but whose restart was interrupted is restarted again: the file alone
  proves nothing, etcd read its trusted CA when it started);
* the reissue phase changes no trust: members keep trusting both CAs while their leaves switch, so every
  handshake between members stays valid throughout;
* the CA key never goes to a member; the trusted-CA file is the only CA material that does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from etcdforge import render, topology
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView
from etcdforge.pki.rotation import STATE_FILE, RotationState, Target, ca_stem
from etcdforge.plan import (
    MoveLeader,
    PutFile,
    RestartMember,
    Step,
    WaitHealthy,
    WriteFile,
)
from etcdforge.runtime.factory import placement
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace


def check_ready(
    spec: ClusterSpec, view: ClusterView, *, resumable: frozenset[str] = frozenset()
) -> frozenset[str]:
    """Refuse to start a phase unless every spec member is a healthy voter; returns the members that are
    down but may be brought back by the phase itself.

    ``resumable`` is the member the record says was being restarted when the last run stopped: it may be
    down (stopped, not started again) as long as all the others are healthy voters — the phase then
    starts it first and waits for the whole cluster before touching anyone else. Any other member down
    is a problem to look at, not something to start blindly.
    """
    by_name = {m.name: m for m in view.members}
    problems = []
    down = set()
    for member in spec.members:
        seen = by_name.get(member.name)
        if seen is None:
            problems.append(f"{member.name} is not a member of the cluster")
        elif seen.is_learner:
            problems.append(f"{member.name} is still a learner")
        elif not seen.healthy:
            if member.name in resumable:
                down.add(member.name)
            else:
                problems.append(f"{member.name} is not healthy")
    if len(down) > 1:
        problems += [f"{n} is not healthy" for n in sorted(down)]
    if problems:
        raise PlanError(
            "a CA rotation restarts members one by one and needs every member healthy first: "
            + "; ".join(problems),
            hint="`etcdforge health` shows why; fix it, then run `pki rotate-ca` again (it resumes)",
        )
    return frozenset(down)


def restart_order(
    spec: ClusterSpec, done: Sequence[str], leader: str | None, down: frozenset[str] = frozenset()
) -> list[str]:
    """Members still to restart: one that is down first (bring it back), then followers in spec order,
    the leader last."""
    todo = [m.name for m in spec.members if m.name not in done]
    first = [n for n in todo if n in down]
    rest = [n for n in todo if n not in down]
    return first + [n for n in rest if n != leader] + ([leader] if leader in rest else [])


def env_step(spec: ClusterSpec, ws: Workspace, ca_file: str) -> Step:
    """The etcdctl environment, trusting ``ca_file`` (the bundle during a rotation, the CA after)."""
    paths = replace(ws.client_paths(), ca_cert=ca_file)
    env = render.etcdctl_env(topology.client_urls(spec), paths)
    return Step("workspace/write-env", "local", WriteFile(str(ws.env_path), env), f"etcdctl trusts {ca_file}")


def state_step(ws: Workspace, state: RotationState, why: str) -> Step:
    if state.restarting:
        suffix = f":{state.restarting}:restarting"
    else:
        suffix = f":{state.restarted[-1]}" if state.restarted else ""
    return Step(
        f"rotation/record:{state.phase}{suffix}",
        "local",
        WriteFile(str(ws.rotation_dir / STATE_FILE), state.to_json(), 0o600),
        why,
    )


def trust_files(
    spec: ClusterSpec, ws: Workspace, name: str, target: Target
) -> tuple[tuple[str, ...], str | None]:
    """Where member ``name`` reads the trusted-CA files a rotation of ``target`` changes, and their owner
    (None: this user's). The CA's rotation changes the peers' file too while peers have no CA of their
    own (they trust what clients trust then)."""
    where = placement(spec, ws)
    paths = where.member_paths(name)
    if target == "peer":
        files: tuple[str, ...] = (paths.peer_ca_cert,)
    elif ws.separate_peers:
        files = (paths.ca_cert,)
    else:
        files = (paths.ca_cert, paths.peer_ca_cert)
    return files, where.file_owner


def bundle_path(ws: Workspace, target: Target) -> Path:
    """The workspace file that holds what the rotating listeners trust (old + new CA, then the new)."""
    return ws.peer_trust_bundle if target == "peer" else ws.trust_bundle


def trust_phase_steps(
    spec: ClusterSpec,
    ws: Workspace,
    state: RotationState,
    *,
    trusted_pem: bytes,
    leader: str | None,
    timeout: float,
    down: frozenset[str] = frozenset(),
    healthy: frozenset[str] | None = None,
) -> list[Step]:
    """Install ``trusted_pem`` as every member's trusted CA and restart the members not yet done.

    Each member restarts through its service manager (local: the binary it runs now; hosts: its
    unit). ``down`` (see :func:`check_ready`) are started first; the opening health gate
    waits for the others only. Leadership is only ever handed to a member already restarted in this
    phase and, when ``healthy`` is given, healthy now.
    """
    names = tuple(m.name for m in spec.members)
    up = tuple(n for n in names if n not in down)
    what = "old and new CA" if state.phase == "trust-both" else "only the new CA"
    who = "peers trust" if state.target == "peer" else "members and clients trust"
    steps = [
        Step(
            "cluster/healthy",
            "cluster",
            WaitHealthy(up, timeout),
            f"phase {state.phase}: every member healthy before the first restart"
            + (f" ({', '.join(sorted(down))} is down and is started first)" if down else ""),
        ),
        Step(
            "workspace/trust",
            "local",
            WriteFile(str(bundle_path(ws, state.target)), trusted_pem),
            f"{who} {what}",
        ),
    ]
    restarted = [n for n in state.restarted if healthy is None or n in healthy]
    current = state
    for name in restart_order(spec, state.restarted, leader, down):
        current = current.with_restarting(name)
        steps.append(state_step(ws, current, f"{name} is about to be restarted (phase {state.phase})"))
        dsts, owner = trust_files(spec, ws, name, state.target)
        steps += [
            Step(
                f"{name}/file:{dst}",
                name,
                PutFile(name, dst, trusted_pem, 0o644, owner, owner, False),
                f"{'peers ' if dst.endswith('peer-ca.pem') else ''}trust {what}",
            )
            for dst in dsts
        ]
        if name == leader and restarted and name not in down:
            steps.append(
                Step(
                    f"{name}/move-leader",
                    name,
                    MoveLeader(restarted[0]),
                    f"{name} leads; hand over to {restarted[0]} before restarting it",
                )
            )
        why = f"etcd reads its trusted CA only at start (phase {state.phase}, one member at a time)"
        steps.append(Step(f"{name}/restart", name, RestartMember(name, timeout), why + ", health-gated"))
        restarted.append(name)
        current = current.with_restarted(name)
        steps.append(state_step(ws, current, f"{name} restarted in phase {state.phase}"))
    return steps


def swap_ca_steps(
    ws: Workspace, new_cert_pem: bytes, new_key_pem: bytes, current_pem: bytes | None, target: Target = "ca"
) -> list[Step]:
    """Make the new CA the signing CA of the workspace (key first: a crash leaves a state the record
    explains and the next run repeats). ``current_pem`` is what the target's CA file holds now."""
    if current_pem == new_cert_pem:
        return []
    stem = ca_stem(target)
    why = (
        "the new peers' CA signs peer certificates from now on"
        if target == "peer"
        else "the new CA signs from now on"
    )
    return [
        Step(
            f"workspace/{stem}-key",
            "local",
            WriteFile(str(ws.pki_dir / f"{stem}-key.pem"), new_key_pem, 0o600, secret=True),
            why,
        ),
        Step(f"workspace/{stem}", "local", WriteFile(str(ws.pki_dir / f"{stem}.pem"), new_cert_pem), why),
    ]
