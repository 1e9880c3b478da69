"""The kill-point harness: a mutating verb is SIGKILLed at every step boundary, then re-run; it must
converge (issue "one plan per verb", item 7).

For a verb: run it once to learn its step ids (the CLI prints ``✓ STEP`` per finished step), put the
cluster back, then for every step k run it with ``ETCDFORGE_FAILPOINT=after:k`` (the CLI SIGKILLs
itself right after step k; ``during:k`` shortly after k started, for the steps that wait), and after
each kill:

- other commands either work or refuse with one line, never a traceback;
- re-running the same command exits 0;
- the cluster is healthy, the spec lists exactly etcd's members, no learner is left, no etcd process
  of the workspace runs that the spec does not know, no change record is left;
- a writer that ran through the kill and the re-run lost no acknowledged write (history checker).

Then the cluster is put back for the next k. The verbs and their inverses are given by the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from etcdforge.runtime import supervisor
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import admin_client, load_workspace

#: steps that wait (on etcd's health or a learner's catching up) get a kill in their middle as well
WAITING = ("/wait-healthy", "/promote", "/restart", "/healthy")


@dataclass
class Outcome:
    """One kill point: what the killed run finished, and the re-run's exit."""

    point: str
    finished: list[str] = field(default_factory=list)
    rerun: int = -1


async def cli(directory: Path, *args: str, failpoint: str = "") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ETCDFORGE_FAILPOINT"}
    if failpoint:
        env["ETCDFORGE_FAILPOINT"] = failpoint
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "etcdforge", *args, "--dir", str(directory),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def finished_steps(stdout: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("✓ ")]


async def learn_steps(directory: Path, argv: Sequence[str]) -> list[str]:
    code, out, err = await cli(directory, *argv)
    assert code == 0, (argv, out, err)
    steps = finished_steps(out)
    assert steps, out
    # a verb of several plans repeats step ids: the N-th occurrence is its own point, STEP#N
    seen: dict[str, int] = {}
    numbered = []
    for step in steps:
        seen[step] = seen.get(step, 0) + 1
        numbered.append(step if seen[step] == 1 else f"{step}#{seen[step]}")
    return numbered


def points(steps: Sequence[str]) -> list[str]:
    return [f"after:{s}" for s in steps] + [f"during:{s}" for s in steps if s.split("#")[0].endswith(WAITING)]


async def check_converged(directory: Path) -> None:
    """The invariants every verb must leave after a re-run."""
    ws, spec = load_workspace(directory)
    async with admin_client(spec, ws, timeout=3.0) as c:
        # every member healthy: the verb itself gates on a healthy quorum only (degraded is normal), so
        # a member still settling (a new voter's first moments, a loaded machine) gets a few seconds
        deadline = time.monotonic() + 10
        while unhealthy := [h for h in await c.health_all() if not h.healthy]:
            assert time.monotonic() < deadline, unhealthy
            await asyncio.sleep(0.2)
        members = await c.member_list()
    assert not [m for m in members if m.is_learner or not m.name], members
    assert sorted(m.name for m in members) == sorted(m.name for m in spec.members)
    listed = {m.name for m in spec.members}
    strays = [
        p.name
        for p in ws.members_dir.iterdir()
        if p.name not in listed and supervisor.running_pid(ws.member_pid(p.name)) is not None
    ]
    assert not strays, f"etcd processes the spec does not know: {strays}"
    assert not (ws.root / "pending-change.json").exists(), "a change record was left behind"
    assert not (ws.root / "bootstrap.json").exists(), "the bootstrap record was left behind"


async def presented_matches_workspace(directory: Path) -> None:
    """Every member's client and peer endpoints present, on a new handshake, the certificate the
    workspace holds for them, and each is signed by the CA that signs its kind (the peers' CA for peer
    certificates): no half-renewed member."""
    from cryptography import x509

    from etcdforge import topology
    from etcdforge.etcd.presented import presented_certificate
    from etcdforge.pki.keys import load_cert
    from etcdforge.runtime.cert_verify import endpoint_tls

    ws, spec = load_workspace(directory)
    ca = x509.load_pem_x509_certificate(ws.ca_cert.read_bytes())
    peer_ca = x509.load_pem_x509_certificate(ws.peer_signing_ca.read_bytes())
    for m in spec.members:
        for url, name, peer in (
            (topology.client_url(spec, m), topology.server_cert_name(m.name), False),
            (topology.peer_url(spec, m), topology.peer_cert_name(m.name), True),
        ):
            want = load_cert(ws.cert_path(name))
            got = await presented_certificate(url, endpoint_tls(ws, m.name, peer=peer))
            assert got.serial == want.serial_number, f"{url} presents {got.serial:x}, not {name}'s"
            signer = peer_ca if peer else ca
            assert want.issuer == signer.subject, f"{name} is not signed by the workspace's CA for it"


async def others_never_crash(directory: Path, probes: Sequence[Sequence[str]]) -> None:
    """Commands run between the kill and the re-run work or refuse with one line."""
    for argv in probes:
        code, out, err = await cli(directory, *argv)
        assert "Traceback" not in err, (argv, err)
        if code != 0:  # a refusal is one error line; a report (status of a half-stopped cluster) is fine
            lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
            assert (lines and lines[0].startswith("error:")) or (out.strip() and not lines), (argv, out, err)


async def _kill_probe_rerun(
    directory: Path, argv: Sequence[str], point: str, probes: Sequence[Sequence[str]], outcome: Outcome
) -> None:
    code, killed_out, err = await cli(directory, *argv, failpoint=point)
    outcome.finished = finished_steps(killed_out)
    assert "Traceback" not in err, (point, err)
    if code != 0:  # (0: the point was never reached, a step this run did not need)
        assert code == -9, (point, code, killed_out, err)  # SIGKILL, not a failure of the verb
    await others_never_crash(directory, probes)
    outcome.rerun, out, err = await cli(directory, *argv)
    assert outcome.rerun == 0, (point, "re-run", out, err)


async def _checked(check: Callable[[Path], Awaitable[None]], directory: Path, outcome: Outcome) -> None:
    try:
        await check(directory)
    except AssertionError as exc:
        raise AssertionError(
            f"after the kill at {outcome.point} (it finished {outcome.finished}): {exc}"
        ) from exc


async def kill_and_rerun(
    directory: Path,
    argv: Sequence[str],
    point: str,
    *,
    probes: Sequence[Sequence[str]],
    under_load: bool = True,
    check: Callable[[Path], Awaitable[None]] = check_converged,
) -> Outcome:
    """Kill ``argv`` at ``point`` (under a writer when a cluster runs before it), probe, re-run, check
    the invariants and the writer's history."""
    outcome = Outcome(point)
    if not under_load:  # `up` from nothing: no cluster to write to yet
        await _kill_probe_rerun(directory, argv, point, probes, outcome)
        await _checked(check, directory, outcome)
        return outcome
    ws, spec = load_workspace(directory)
    async with admin_client(spec, ws, timeout=2.0) as client:
        writer = Writer(client, prefix=f"/kp/{point.replace(':', '-')}")
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop, pause=0.01))
        try:
            await _kill_probe_rerun(directory, argv, point, probes, outcome)
        finally:
            stop.set()
            await task
    await _checked(check, directory, outcome)
    ws, spec = load_workspace(directory)
    async with admin_client(spec, ws, timeout=3.0) as client:
        result = await check_history(client, writer.history)
    assert result.ok, (point, result.problems)
    return outcome


def matrix_line(verb: str, version: str, outcomes: Sequence[Outcome]) -> str:
    passed = sum(1 for o in outcomes if o.rerun == 0)
    return json.dumps({"verb": verb, "etcd": version, "points": len(outcomes), "passed": passed})
