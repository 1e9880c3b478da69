"""The one executor: runs any :class:`~etcdforge.plan.Plan` against a runtime.

For each step it reports progress, dispatches the action to the runtime (which re-checks the step's
guard — the plan is a preview, not a promise — and acts idempotently), and stops at the first failure
with a :class:`~etcdforge.errors.StepError` naming the step. The original error stays available as
``__cause__`` (a member's log tail, for example).
"""

from __future__ import annotations

from typing import Protocol

from etcdforge.errors import EtcdforgeError, StepError
from etcdforge.plan import Action, Plan, Step


class Runtime(Protocol):
    """Where actions take effect (local processes, or hosts over SSH).

    ``perform`` re-checks the action's guard, acts idempotently and returns a short note for progress;
    it raises an :class:`EtcdforgeError` for an expected failure and a ``TypeError`` for an action it
    does not support (a planner bug).
    """

    async def perform(self, action: Action) -> str: ...


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


async def execute(plan: Plan, runtime: Runtime, reporter: Reporter | None = None) -> None:
    rep = reporter or SilentReporter()
    for step in plan.steps:
        rep.step_started(step)
        try:
            note = await runtime.perform(step.action)
        except StepError as exc:
            rep.step_failed(step, exc)
            raise
        except EtcdforgeError as exc:
            rep.step_failed(step, exc)
            raise StepError(str(exc), step_id=step.id) from exc
        rep.step_done(step, note)
