"""The one executor: runs any :class:`~etcdforge.plan.Plan` against a runtime.

For each step it reports progress, dispatches the action to the runtime (which re-checks the step's
guard — the plan is a preview, not a promise — and acts idempotently), and stops at the first failure
with a :class:`~etcdforge.errors.StepError` naming the step. The original error stays available as
``__cause__`` (a member's log tail, for example).
"""

from __future__ import annotations

from typing import Protocol

from etcdforge.errors import EtcdforgeError, StepError
from etcdforge.plan import (
    InstallMemberPki,
    IssueCerts,
    Plan,
    RemoveTree,
    StartMember,
    Step,
    StopMember,
    WaitHealthy,
    WriteFile,
)


class Runtime(Protocol):
    """Where actions take effect. Each method is idempotent and returns a short note for progress."""

    async def write_file(self, action: WriteFile) -> str: ...
    async def issue_certs(self, action: IssueCerts) -> str: ...
    async def install_member_pki(self, action: InstallMemberPki) -> str: ...
    async def start_member(self, action: StartMember) -> str: ...
    async def stop_member(self, action: StopMember) -> str: ...
    async def wait_healthy(self, action: WaitHealthy) -> str: ...
    async def remove_tree(self, action: RemoveTree) -> str: ...


class Reporter(Protocol):
    def step_started(self, step: Step) -> None: ...
    def step_done(self, step: Step, note: str) -> None: ...
    def step_failed(self, step: Step, error: EtcdforgeError) -> None: ...


class SilentReporter:
    def step_started(self, step: Step) -> None:
        pass

    def step_done(self, step: Step, note: str) -> None:
        pass

    def step_failed(self, step: Step, error: EtcdforgeError) -> None:
        pass


async def _dispatch(runtime: Runtime, step: Step) -> str:
    a = step.action
    if isinstance(a, WriteFile):
        return await runtime.write_file(a)
    if isinstance(a, IssueCerts):
        return await runtime.issue_certs(a)
    if isinstance(a, InstallMemberPki):
        return await runtime.install_member_pki(a)
    if isinstance(a, StartMember):
        return await runtime.start_member(a)
    if isinstance(a, StopMember):
        return await runtime.stop_member(a)
    if isinstance(a, WaitHealthy):
        return await runtime.wait_healthy(a)
    return await runtime.remove_tree(a)


async def execute(plan: Plan, runtime: Runtime, reporter: Reporter | None = None) -> None:
    rep = reporter or SilentReporter()
    for step in plan.steps:
        rep.step_started(step)
        try:
            note = await _dispatch(runtime, step)
        except StepError as exc:
            rep.step_failed(step, exc)
            raise
        except EtcdforgeError as exc:
            rep.step_failed(step, exc)
            raise StepError(str(exc), step_id=step.id) from exc
        rep.step_done(step, note)
