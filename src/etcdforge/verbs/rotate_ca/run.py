"""``pki rotate-ca``: replace the workspace's CA without downtime, in recorded, resumable phases.

Phases and their safety rules: :mod:`etcdforge.pki.rotation` and :mod:`etcdforge.verbs.rotate_ca.plan`.
Each phase is observed (the cluster's health and leader, the record) → planned (pure) → executed by the
one executor with the mode's runtime. The record (``pki/rotation/state.json``) is written after every
member's restart and at every phase boundary, so a re-run — after Ctrl-C, SIGKILL or a failed health gate
— continues where the last run stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import certs
from etcdforge.errors import PkiError, PlanError
from etcdforge.executor import Reporter, Runtime, execute
from etcdforge.hosts.base import Host
from etcdforge.pki.model import CertRequest
from etcdforge.pki.observe import PEER_CA_KEY
from etcdforge.pki.rotation import (
    FINISHED_DIR,
    NEW_CA,
    NEW_CA_KEY,
    OLD_CA,
    OLD_CA_KEY,
    PHASES,
    STATE_FILE,
    Phase,
    RotationState,
    Target,
    bundle,
    ca_stem,
    fingerprint,
)
from etcdforge.plan import IssueCerts, MovePath, Plan, RemoveTree, Step, WriteFile
from etcdforge.runtime.control import ControlFiles
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.spec import ClusterSpec
from etcdforge.verbs.backup.run import safety_steps
from etcdforge.verbs.member.steps import observe_view
from etcdforge.verbs.renew import plan as renew_plan
from etcdforge.verbs.renew.run import install_steps, observe_members, require_our_layout
from etcdforge.verbs.rotate_ca import plan as rplan
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace


@dataclass(frozen=True)
class PhaseRun:
    phase: Phase
    plan: Plan


@dataclass(frozen=True)
class RotateResult:
    runs: tuple[PhaseRun, ...]
    #: the record after this run; None once the rotation finished
    state: RotationState | None
    executed: bool
    note: str = ""


@dataclass(frozen=True)
class _Cas:
    old_cert: bytes
    old_key: bytes
    new_cert: bytes
    new_key: bytes


def _state_path(ws: Workspace) -> Path:
    return ws.rotation_dir / STATE_FILE


def load_state(ws: Workspace) -> RotationState | None:
    path = _state_path(ws)
    if not path.is_file():
        return None
    return RotationState.from_json(path.read_bytes(), str(path))


def _read_cas(ws: Workspace, state: RotationState) -> _Cas:
    from etcdforge.pki.keys import load_cert

    d = ws.rotation_dir
    try:
        cas = _Cas(*((d / n).read_bytes() for n in (OLD_CA, OLD_CA_KEY, NEW_CA, NEW_CA_KEY)))
    except FileNotFoundError as exc:
        raise PkiError(
            f"the CA rotation record is in {d}, but {exc.filename} is missing",
            hint="restore the rotation directory from a backup",
        ) from None
    if (
        fingerprint(load_cert(d / OLD_CA)) != state.old_ca
        or fingerprint(load_cert(d / NEW_CA)) != state.new_ca
    ):
        raise PkiError(
            f"the CA files in {d} are not the ones the rotation record names",
            hint="restore the rotation directory from a backup",
        )
    return cas


def _signing_files(spec: ClusterSpec, ws: Workspace, target: Target) -> tuple[Path, Path]:
    """The files of the CA that signs ``target``'s certificates now (a workspace without a peers' CA:
    the CA, whose key may live outside when the spec names an external CA)."""
    if target == "peer" and ws.peer_ca_cert.is_file():
        return ws.peer_ca_cert, ws.pki_dir / PEER_CA_KEY
    external = certs.external_ca(spec, base_dir=ws.root)
    return ws.ca_cert, external.key_path if external is not None else ws.pki_dir / "ca-key.pem"


def _prepare(spec: ClusterSpec, ws: Workspace, target: Target) -> tuple[RotationState, _Cas, list[Step]]:
    """A new CA (same settings as the spec's CA), the record of a rotation about to start, and the
    steps that keep both in the workspace (the record last: from there on, the rotation exists)."""
    from etcdforge.pki import create_ca, key_matches, load_cert, load_key

    cert_path, key_path = _signing_files(spec, ws, target)
    old_cert, old_key = load_cert(cert_path), load_key(key_path)
    if not key_matches(old_cert, old_key):
        raise PkiError(f"{key_path} does not match {cert_path}")
    now = datetime.now(UTC)
    settings = certs.ca_settings(spec, base_dir=ws.root)
    new = create_ca(certs.peer_ca_settings(settings) if target == "peer" else settings, now)
    cas = _Cas(cert_path.read_bytes(), key_path.read_bytes(), new.cert_pem(), new.key_pem())
    state = RotationState(
        "trust-both", fingerprint(old_cert), fingerprint(new.cert), now.isoformat(), target=target
    )
    d = ws.rotation_dir
    files = ((OLD_CA, cas.old_cert, 0o644), (OLD_CA_KEY, cas.old_key, 0o600),
             (NEW_CA, cas.new_cert, 0o644), (NEW_CA_KEY, cas.new_key, 0o600))  # fmt: skip
    steps = [
        Step(f"rotation/{name}", "local", WriteFile(str(d / name), data, mode, secret=mode == 0o600), why)
        for (name, data, mode), why in zip(
            files,
            ("the CA now (kept until the end)", "its key", "the new CA", "the new CA's key"),
            strict=True,
        )
    ]
    steps.append(rplan.state_step(ws, state, "the rotation starts (resumable from here)"))
    return state, cas, steps


def _bundle_of(*pems: bytes) -> bytes:
    from cryptography import x509

    return bundle(*(x509.load_pem_x509_certificate(p) for p in pems))


async def rotate_ca(
    directory: Path,
    *,
    peer: bool = False,
    stop_after: Phase | None = None,
    new_keys: bool = False,
    dry_run: bool = False,
    timeout: float = 120.0,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
    on_phase: Callable[[Phase], None] | None = None,
    no_snapshot: bool = False,
) -> RotateResult:
    target: Target = "peer" if peer else "ca"
    with locked_workspace(directory) as (ws, spec):
        if spec.pki.ca is not None and not peer:
            raise PkiError(
                "rotate-ca replaces the workspace's own CA; this spec signs with an external CA (pki.ca)",
                hint="rotate that CA where it lives, or remove pki.ca so etcdforge manages the CA",
            )
        leftover = ws.pki_dir / FINISHED_DIR
        if leftover.exists():
            # the last run was interrupted while cleaning up after its rotation had finished
            if not dry_run:
                await execute(Plan("rotate-ca", (_clean_up(leftover),)), ControlFiles(), reporter)
            return RotateResult((), None, executed=not dry_run, note="the previous CA rotation had finished")
        state = load_state(ws)
        if state is not None and state.target != target:
            doing, flag = ("the peers' CA", " --peer") if state.target == "peer" else ("the CA", "")
            raise PkiError(
                f"a rotation of {doing} is in progress (phase {state.phase}); one rotation at a time",
                hint=f"finish it first: `etcdforge pki rotate-ca{flag}` resumes it",
            )
        if (
            state is not None
            and stop_after is not None
            and PHASES.index(stop_after) < PHASES.index(state.phase)
        ):
            return RotateResult(
                (), state, executed=False, note=f"the rotation is already past {stop_after}; nothing done"
            )
        names = [m.name for m in spec.members]
        runs: list[PhaseRun] = []
        async with open_runtime(spec, ws, names, accept_new_host_keys=accept_new_host_keys) as runtime:
            hosts = runtime.hosts
            prelude: list[Step] = []
            if state is None:
                rplan.check_ready(spec, await observe_view(spec, ws))
                require_our_layout(spec, ws, await observe_members(spec, ws, hosts), names)
                state, cas, prelude = _prepare(spec, ws, target)
                # a safety snapshot before the rotation begins (not when resuming one)
                safety, _ = await safety_steps(spec, ws, skip=no_snapshot)
                prelude = [*safety, *prelude]
            else:
                cas = _read_cas(ws, state)
            current: RotationState | None = state
            while current is not None:
                phase = current.phase
                if on_phase is not None:
                    on_phase(phase)
                # a dry run executes nothing, so only the first phase's readiness says anything now
                check = not dry_run or not runs
                plan, current = await _phase(
                    spec, ws, current, cas, runtime, hosts, new_keys, timeout, dry_run, reporter, check,
                    prelude,
                )  # fmt: skip
                prelude = []
                runs.append(PhaseRun(phase, plan))
                if phase == stop_after:
                    break
        return RotateResult(tuple(runs), current, executed=not dry_run)


async def _phase(
    spec: ClusterSpec,
    ws: Workspace,
    state: RotationState,
    cas: _Cas,
    runtime: Runtime,
    hosts: Mapping[str, Host],
    new_keys: bool,
    timeout: float,
    dry_run: bool,
    reporter: Reporter | None,
    check: bool = True,
    prelude: Sequence[Step] = (),
) -> tuple[Plan, RotationState | None]:
    """Plan and (unless ``dry_run``) run ``state``'s phase, after the ``prelude`` steps (a new
    rotation's preparation); returns the plan and the next record."""
    if state.phase == "finish":
        # (a dry run has not put the new CA in the trust file: nothing to check yet)
        plan = Plan("rotate-ca", (*prelude, *_finish_steps(ws, cas, state.target, check=not dry_run)))
        if not dry_run:
            await execute(plan, runtime, reporter)
        return plan, None
    view = await observe_view(spec, ws)
    trust_phase = state.phase in ("trust-both", "trust-new")
    resumable = frozenset({state.restarting}) if trust_phase and state.restarting else frozenset()
    down = rplan.check_ready(spec, view, resumable=resumable) if check else frozenset()
    if check:
        require_our_layout(spec, ws, await observe_members(spec, ws, hosts), _names(spec))
    leader = next((m.name for m in view.members if m.is_leader), None)
    nxt = state.next_phase()
    if trust_phase:
        trusted = (
            _bundle_of(cas.old_cert, cas.new_cert)
            if state.phase == "trust-both"
            else _bundle_of(cas.new_cert)
        )
        healthy = frozenset(m.name for m in view.members if m.healthy)
        steps = rplan.trust_phase_steps(
            spec, ws, state, trusted_pem=trusted, leader=leader, timeout=timeout, down=down,
            healthy=healthy,
        )  # fmt: skip
        if state.target == "ca":
            steps.append(rplan.env_step(spec, ws, str(ws.trust_bundle.resolve())))
        steps.append(rplan.state_step(ws, nxt, f"phase {state.phase} done"))
        plan = Plan("rotate-ca", (*prelude, *steps))
        if not dry_run:
            await execute(plan, runtime, reporter)
        return plan, nxt
    # reissue: the new CA signs; every leaf is reissued and installed hot; trust does not change.
    # One plan: the PKI plan and the installed files' bytes are deferred values (made when they run,
    # from the CA the swap put there).
    target = state.target
    current = ws.pki_dir / f"{ca_stem(target)}.pem"
    swap = rplan.swap_ca_steps(
        ws, cas.new_cert, cas.new_key, current.read_bytes() if current.is_file() else None, target
    )
    requests = _signed_by(spec, ws, target, separate=ws.separate_peers)
    items = tuple((r.name, "signed by the old CA") for r in requests)
    issue = Step(
        "pki/issue",
        "local",
        IssueCerts(items, None, new_keys=new_keys, only=tuple(r.name for r in requests)),
        f"reissue every {'peer ' if target == 'peer' else ''}certificate from the new CA "
        "(those it has not signed yet)",
    )
    names = _names(spec)
    seen = await observe_members(spec, ws, hosts)
    running = dict(seen.running) if check else dict.fromkeys(names, True)  # (a dry run's later phase:
    # the earlier phases, which would start a stopped member, have not run)
    if not all(running.values()):
        stopped = ", ".join(m for m, r in running.items() if not r)
        raise PlanError(
            f"{stopped} stopped during the CA rotation", hint="start it, then run rotate-ca again"
        )
    installs = install_steps(spec, ws, seen, names, frozenset(r.name for r in requests))
    # only the ports whose certificates this CA signs
    ports = ("peer",) if target == "peer" else ("client",) if ws.separate_peers else ("client", "peer")
    verify = renew_plan.verify_steps(
        spec, names, running, peer_required=placement(spec, ws).peer_reachable, ports=ports
    )
    last = rplan.state_step(ws, nxt, "phase reissue done")
    plan = Plan("rotate-ca", (*prelude, *swap, issue, *installs, *verify, last))
    if not dry_run:
        await execute(plan, runtime, reporter)
    return plan, nxt


def _names(spec: ClusterSpec) -> tuple[str, ...]:
    return tuple(m.name for m in spec.members)


def _signed_by(spec: ClusterSpec, ws: Workspace, target: Target, *, separate: bool) -> list[CertRequest]:
    """The certificates the rotating CA signs: the peers' with ``peer``; with ``ca`` the server and
    client certificates — and the peers' too while peers have no CA of their own."""
    requests = certs.cert_requests(spec, base_dir=ws.root)
    if target == "peer":
        return [r for r in requests if r.profile == "peer"]
    return [r for r in requests if r.profile != "peer" or not separate]


def _finish_steps(ws: Workspace, cas: _Cas, target: Target = "ca", *, check: bool = True) -> list[Step]:
    """Archive the old CA under pki/retired/, then end the rotation with one atomic rename of its
    directory (a kill after it leaves only the clean-up, which the next run does) and remove that.

    ``pki/trust.pem`` stays, holding only the new CA: clients pointed at it during the rotation keep
    working, and it remains the one file that always holds what members trust.
    """
    from cryptography import x509

    trust = rplan.bundle_path(ws, target)
    if check and trust.read_bytes() != cas.new_cert:
        raise PkiError(f"{trust} should hold only the new CA now", hint="run rotate-ca again")
    old = x509.load_pem_x509_certificate(cas.old_cert)
    stem = ca_stem(target)
    retired = ws.pki_dir / "retired" / f"{stem}-{old.not_valid_before_utc:%Y%m%d}-{old.serial_number:x}"[:64]
    done = ws.pki_dir / FINISHED_DIR
    end = [
        Step("rotation/end", "local", MovePath(str(ws.rotation_dir), str(done)), "the rotation is over"),
        _clean_up(done),
    ]
    if target == "peer" and ws.ca_cert.is_file() and ws.ca_cert.read_bytes() == cas.old_cert:
        return end  # peers got a CA of their own: the old one is still the CA of clients and servers
    return [
        Step(
            f"retired/{stem}",
            "local",
            WriteFile(str(retired / f"{stem}.pem"), cas.old_cert),
            "keep the old CA",
        ),
        Step(
            f"retired/{stem}-key",
            "local",
            WriteFile(str(retired / f"{stem}-key.pem"), cas.old_key, 0o600, secret=True),
            "and its key (certificates it signed can still be checked)",
        ),
        *end,
    ]


def _clean_up(done: Path) -> Step:
    return Step("rotation/clean-up", "local", RemoveTree(str(done), marker=STATE_FILE), "its record")
