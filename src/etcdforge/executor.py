"""The one executor: runs any :class:`~etcdforge.plan.Plan` against a runtime.

For each step it reports progress, dispatches the action to the runtime (which re-checks the step's
guard — the plan is a preview, not a promise — and acts idempotently), and stops at the first failure
with a :class:`~etcdforge.errors.StepError` naming the step. The original error stays available as
``__cause__`` (a member's log tail, for example).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from etcdforge import progress
from etcdforge.errors import EtcdforgeError, PlanError, StepError
from etcdforge.plan import Action, Plan, Step


class Runtime(Protocol):
    """Where actions take effect (local processes, or hosts over SSH).

    ``perform`` re-checks the action's guard, acts idempotently and returns a short note for progress;
    it raises an :class:`EtcdforgeError` for an expected failure and a ``TypeError`` for an action it
    does not support (a planner bug).
    """

    async def perform(self, action: Action) -> str: ...


@runtime_checkable
class BatchRuntime(Runtime, Protocol):
    """A runtime that can carry out a group of steps together (e.g. one round trip per host)."""

    async def perform_batch(self, actions: Sequence[Action]) -> list[str]: ...


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


def batches(plan: Plan) -> list[list[Step]]:
    """Steps in execution batches: consecutive steps sharing a non-empty group form one batch."""
    out: list[list[Step]] = []
    for step in plan.steps:
        if out and step.group and out[-1][0].group == step.group:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def _progress_sink(rep: Reporter, step: Step) -> Callable[[str], None] | None:
    """The reporter's ``step_progress(step, text)``, when it has one (a progress line for long steps)."""
    method = getattr(rep, "step_progress", None)
    return None if method is None else (lambda text: method(step, text))


async def _one(runtime: Runtime, step: Step, rep: Reporter) -> None:
    rep.step_started(step)
    try:
        with progress.reporting_to(_progress_sink(rep, step)):
            note = await runtime.perform(step.action)
    except StepError as exc:
        rep.step_failed(step, exc)
        raise
    except EtcdforgeError as exc:
        rep.step_failed(step, exc)
        raise StepError.wrap(exc, step_id=step.id, host=step.host) from exc
    rep.step_done(step, note)


async def _batch(runtime: BatchRuntime, batch: list[Step], rep: Reporter) -> None:
    for step in batch:
        rep.step_started(step)
    try:
        notes = await runtime.perform_batch([s.action for s in batch])
    except EtcdforgeError as exc:
        for step in batch:
            rep.step_failed(step, exc)
        if isinstance(exc, StepError):
            raise
        raise StepError.wrap(
            exc, step_id=f"{batch[0].group} ({len(batch)} steps)", host=getattr(exc, "host", None)
        ) from exc
    for step, note in zip(batch, notes, strict=True):
        rep.step_done(step, note)


#: asked once before a plan with destructive steps runs; True lets it run
Confirm = Callable[[Sequence[Step]], bool]


async def execute(
    plan: Plan, runtime: Runtime, reporter: Reporter | None = None, *, confirm: Confirm | None = None
) -> None:
    """Run ``plan``: batches in order, the steps of a batch concurrently; stop at the first failure.

    A plan with steps that destroy data runs only if ``confirm`` says yes to them (asked once, before
    any step); without ``confirm`` it is refused with nothing changed. In a concurrent batch every step
    is allowed to finish (a half-written host is worse than a fully prepared one) before the first
    failure is raised.
    """
    destructive = plan.destructive
    if destructive and (confirm is None or not confirm(destructive)):
        what = "; ".join(s.destroys for s in destructive)
        keep = any(s.id.endswith("/wipe-data") for s in destructive)
        raise PlanError(
            f"this would destroy {what}; nothing was changed",
            hint="pass --yes to confirm" + (", or --keep-data to keep it" if keep else ""),
        )
    rep = reporter or SilentReporter()
    for batch in batches(plan):
        if len(batch) == 1:
            await _one(runtime, batch[0], rep)
            continue
        if isinstance(runtime, BatchRuntime):
            await _batch(runtime, batch, rep)
            continue
        results = await asyncio.gather(*(_one(runtime, s, rep) for s in batch), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
