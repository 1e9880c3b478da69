"""``upgrade --to VERSION``: observe (each member's version, health, alarms; the record of a run that was
interrupted) → one plan (:mod:`~etcdforge.verbs.upgrade.plan`) → the executor. A member whose new release
fails (does not come back healthy, reports another version, or does not serve the canary) is switched
back to its previous binary and the run stops with the reason; the cluster keeps running the old
release there while it is still mixed.

Local mode switches each member's process to the new binary (``--etcd-bin``). On real hosts (with
``etcd.source: upload``) the new binary is staged on every host first, then each member's unit is
stopped, the binary swapped (the previous kept as ``etcd.previous``) and started, in one session; the
spec then names the new binary, so ``apply`` uploads that release's etcdctl/etcdutl too. With
``source: system`` or ``download`` a changed ``etcd.version`` goes through ``apply``, which follows the
same version rules.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from etcdforge import binaries, versions
from etcdforge.errors import PlanError, StepError
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.observe.cluster import ClusterView
from etcdforge.plan import HostCommand, Plan, Step, SwitchBinary, UploadFile, WriteFile
from etcdforge.runtime import releases
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.spec import ClusterSpec, dump_spec
from etcdforge.verbs.backup.run import safety_steps
from etcdforge.verbs.maintenance.run import observe
from etcdforge.verbs.member.run import SETTLE_SECONDS
from etcdforge.verbs.member.steps import PENDING_FILE
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.verbs.upgrade.plan import UpgradeInputs, plan_upgrade, record
from etcdforge.workspace import Workspace

RECORD = "upgrade.json"


@dataclass(frozen=True)
class UpgradeResult:
    plan: Plan
    warnings: tuple[str, ...] = ()
    note: str = ""
    executed: bool = False


def _config_without_removed(path: Path, target: versions.Version) -> bytes | None:
    """The member's config minus the settings ``target`` removed, or None when it has none of them."""
    from etcdforge.yamlio import dump_yaml, load_yaml

    if not path.is_file():
        return None
    text = path.read_text()
    data = load_yaml(text, source=str(path))
    removed = versions.removed_settings(target) & set(data)
    if not removed:
        return None
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return (header + dump_yaml({k: v for k, v in data.items() if k not in removed})).encode()


def _with_binary(spec: ClusterSpec, binary: Path, target: versions.Version) -> ClusterSpec:
    etcd = spec.etcd.model_copy(
        update={"binary": str(binary), "version": versions.show(target) if spec.etcd.version else None}
    )
    return spec.model_copy(update={"etcd": etcd})


async def upgrade(
    directory: Path,
    *,
    to: str,
    etcd_bin: str | None = None,
    dry_run: bool = False,
    allow_unsafe: bool = False,
    downgrade: bool = False,
    timeout: float = 120.0,
    no_snapshot: bool = False,
    reporter: Reporter | None = None,
    confirm: Confirm | None = None,
) -> UpgradeResult:
    try:
        target = versions.parse(to)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    with locked_workspace(directory) as (ws, spec):
        here = placement(spec, ws).members_here
        if not here and spec.etcd.source != "upload":
            origin = "the hosts' packages" if spec.etcd.source == "system" else "a download"
            raise PlanError(
                f"etcd comes from {origin} (etcd.source: {spec.etcd.source})",
                hint="set etcd.version (and sha256) and run `etcdforge plan` / `apply`, which follow the "
                "same version rules; or set etcd.source: upload and apply, then `upgrade --etcd-bin`",
            )
        record_path = ws.root / RECORD
        saved = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if saved and saved.get("target") != versions.show(target):
            raise PlanError(
                f"an upgrade to {saved.get('target')} is under way; finish it first",
                hint=f"etcdforge upgrade --to {saved.get('target')}",
            )
        chosen = etcd_bin or saved.get("binary")
        if not chosen:
            raise PlanError("pass --etcd-bin with the etcd binary of the release you upgrade to")
        binary = binaries.probe(binaries.find_tool("etcd", chosen))
        resuming = saved.get("member") or None
        view = await _settled(spec, ws, resuming)
        after = _with_binary(spec, binary.path, target)
        configs = tuple(
            (m.name, str(path), content)
            for m in spec.members
            for path in [Path(ws.member_paths(m.name).config)]
            for content in [_config_without_removed(path, target)]
            if content is not None
        )
        staged = f"{spec.etcd.install_dir.rstrip('/')}/etcd.new"
        stage: tuple[Step, ...] = ()
        if not here:  # the new binary goes to every host first, beside the one that runs
            digest = releases.file_sha256(binary.path)
            upload = {
                m.name: UploadFile(m.name, str(binary.path), staged, 0o755, digest) for m in spec.members
            }
            stage = tuple(
                Step(
                    f"{m.name}/stage-binary", m.name, upload[m.name],
                    f"etcd {versions.show(target)} beside the running one", group="stage",
                )
                for m in spec.members
                if next((x.version for x in view.members if x.name == m.name), "") != versions.show(target)
                or m.name == resuming
            )  # fmt: skip
        inputs = UpgradeInputs(
            view=view,
            target=target,
            binary=str(binary.path.resolve()) if here else staged,
            binary_version=binary.version,
            production=not here,  # local mode: development and tests (3.5.0–3.5.2 warn, not refuse)
            allow_unsafe=allow_unsafe,
            downgrade=downgrade,
            resuming=resuming,
            membership_change=(ws.root / PENDING_FILE).exists(),
            free_bytes=shutil.disk_usage(ws.root).free,
            timeout=timeout,
            record_path=str(record_path),
            spec_path=str(ws.spec_path),
            spec_after=dump_spec(after).encode() if after != spec else b"",
            configs=configs,
            auth_enabled=await _auth_enabled(spec, ws),
        )
        safety, safety_warnings = await safety_steps(spec, ws, skip=no_snapshot or bool(saved))
        plan, warnings, note = plan_upgrade(inputs, (*safety, *stage))
        if stage and plan.steps:  # the staged copies go once every member runs the release
            unstage = tuple(
                Step(
                    f"{s.host}/unstage-binary",
                    s.host,
                    HostCommand(s.host, ("rm", "-f", "--", staged)),
                    "staged copy",
                )
                for s in stage
            )
            plan = Plan("upgrade", (*plan.steps[:-1], *unstage, plan.steps[-1]))
        warnings = tuple(safety_warnings) + warnings
        if dry_run or plan.empty:
            return UpgradeResult(plan, warnings, note)
        async with open_runtime(spec, ws, etcd_bin=str(binary.path) if here else None) as runtime:
            try:
                await execute(plan, runtime, reporter, confirm=confirm)
            except StepError as exc:
                member, _, what = exc.step_id.partition("/")
                if what not in ("switch-binary", "check"):
                    raise
                back = Plan(
                    "upgrade",
                    (
                        Step(
                            f"{member}/roll-back",
                            member,
                            SwitchBinary(member, None, timeout),
                            "its previous binary",
                        ),
                        # no member is mid-switch any more: a member down later is a problem, not a resume
                        Step(
                            "upgrade/record", "local",
                            WriteFile(str(record_path), record(target, inputs.binary, ""), 0o600),
                            "rolled back",
                        ),
                    ),
                )  # fmt: skip
                try:
                    await execute(back, runtime, reporter)
                except StepError as again:
                    raise PlanError(
                        f"etcd {to} failed on {member} ({exc}), and switching it back failed too: {again}",
                        hint="`etcdforge health`; `member replace` it if it cannot start",
                    ) from exc
                raise PlanError(
                    f"etcd {to} failed on {member}: {exc}",
                    hint=f"{member} runs its previous binary again; the cluster is healthy on the old "
                    "release there. Fix the cause, then run the upgrade again (it resumes)",
                ) from exc
        return UpgradeResult(plan, warnings, note, True)


async def _settled(spec: ClusterSpec, ws: Workspace, resuming: str | None) -> ClusterView:
    """The cluster, asked again for a few seconds while a member does not serve (right after a restart
    or an election); then its last answer stands (the planner refuses if someone is still down)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        view = await observe(spec, ws)
        down = [m for m in view.members if not m.serving and m.name != resuming]
        if not down or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(0.5)


async def _auth_enabled(spec: ClusterSpec, ws: Workspace) -> bool | None:
    from etcdforge.errors import EtcdError
    from etcdforge.workspace import admin_client

    try:
        async with admin_client(spec, ws, timeout=3.0) as client:
            return (await client.auth_status()).enabled
    except EtcdError:
        return None
