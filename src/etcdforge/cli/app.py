"""The root click group and what every command shares: options, consoles, the asyncio runner, progress.

Imports of the library (grpc, cryptography, pydantic) happen inside the commands, so ``--help`` and
simple commands start fast. Expected failures (:class:`~etcdforge.errors.EtcdforgeError`) print one
line, plus a member's log tail where there is one, and exit non-zero; a traceback only with ``--debug``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

    from etcdforge.plan import Plan

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _default_dir() -> Path:
    from etcdforge.workspace import default_dir

    return default_dir()


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Workspace directory (default: $ETCDFORGE_DIR or ~/.local/share/etcdforge/local).",
)
output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def hosts_options(command: F) -> F:
    """The members and SSH options shared by `init` and `adopt` (one place for their names and help)."""
    for option in reversed(
        (
            click.option("--member", "members", multiple=True, required=True,
                         help="NAME=ADDRESS, once per member."),
            click.option("--name", default=None, help="Cluster name (default: the directory's name)."),
            click.option("--ssh-user", default="root", show_default=True),
            click.option("--ssh-port", type=int, default=22, show_default=True),
            click.option("--ssh-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help="Private key file."),
            click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path), default=None),
            click.option("--sudo", is_flag=True, help="Use sudo -n on the hosts (non-root SSH user)."),
        )
    ):  # fmt: skip
        command = option(command)
    return command


def make_console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (scripts, CI logs) gets a wide fixed width instead of rich's 80-column fallback,
    # so tables are not truncated.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def one_line(text: str) -> str:
    """``text`` with every control character shown as an escape: a value from a spec or a host cannot
    break an error line in two or send terminal escapes."""
    return text.translate(_CONTROL)


def plain(text: object) -> str:
    """Text that came from outside (a host, etcd, a file name, a spec value) made safe to embed in
    rich markup: one line, control characters as escapes, ``[`` escaped (a ``[/]`` in a host's file
    name must not end a style, or raise MarkupError in the middle of an apply)."""
    from rich.markup import escape

    return escape(one_line(str(text)))


def printable_lines(text: str) -> str:
    """Like :func:`one_line`, but line breaks stay (a log tail)."""
    return "\n".join(one_line(line) for line in text.splitlines())


no_snapshot_option = click.option(
    "--no-snapshot",
    is_flag=True,
    help="Skip the safety snapshot taken first (kept in the workspace's backups/safety, the last 5).",
)

yes_option = click.option(
    "--yes", "-y", is_flag=True, help="Do not ask before steps that destroy data (needed without a terminal)."
)


def confirmer(yes: bool) -> Callable[[Any], bool]:
    """The executor's question before steps that destroy data: yes with --yes, asked on a terminal,
    no otherwise (the executor then refuses with one line, nothing changed)."""

    def confirm(steps: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        from rich.markup import escape

        err = make_console(stderr=True)
        for step in steps:
            err.print(f"[yellow]destroys:[/] {escape(one_line(step.destroys))}")
        return click.confirm("Go on?", default=False)

    return confirm


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fail(message: str, code: int = 1) -> NoReturn:
    make_console(stderr=True).print(f"[bold red]error:[/] {plain(message)}", markup=True)
    sys.exit(code)


class _Group(click.Group):
    """Maps expected errors to one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from etcdforge.errors import EtcdforgeError, MemberStartError

        try:
            return super().invoke(ctx)
        except EtcdforgeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err = make_console(stderr=True)
            from rich.markup import escape

            err.print(f"[bold red]error:[/] {escape(one_line(str(exc)))}")
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, MemberStartError):
                cause = cause.__cause__
            if isinstance(cause, MemberStartError) and cause.log_tail:
                err.print(f"[dim]--- last lines of {cause.member}'s log ---[/]")
                err.print(printable_lines(cause.log_tail), markup=False)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="etcdforge")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """etcdforge: secure etcd clusters, from one spec.

    `etcdforge up` starts a 3-member mutual-TLS cluster on this machine; `eval "$(etcdforge env)"` then
    makes plain etcdctl work against it.
    """
    # gRPC's C core logs TLS handshake failures to stderr itself; our errors already explain them.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def workspace_dir(directory: Path | None) -> Path:
    return directory if directory is not None else _default_dir()


#: fault injection for the kill-point tests (tests/killpoints): ``after:STEP_ID`` SIGKILLs this process
#: right after that step finished, ``during:STEP_ID`` shortly after it started. For testing only: it
#: proves that a re-run converges from an interruption at any step.
FAILPOINT_ENV = "ETCDFORGE_FAILPOINT"
DURING_DELAY = 0.05


def _kill_self() -> None:
    import signal

    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class StepPrinter:
    """Progress for plan execution: a spinner naming the running step(s), one line per finished step.

    Steps of a batch run concurrently, so the spinner shows every running step id.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._running: dict[str, str] = {}
        self._status: Any = None
        # "after:STEP" or "during:STEP"; STEP#N is the N-th time a step with that id runs (a verb of
        # several plans, such as rotate-ca's phases, repeats ids)
        when, _, step = os.environ.get(FAILPOINT_ENV, "").partition(":")
        self._failpoint = (when, step) if when in ("after", "during") and step else None
        self._seen: dict[tuple[str, str], int] = {}
        self._started: dict[str, float] = {}

    def _point(self, when: str, step_id: str) -> bool:
        if self._failpoint is None:
            return False
        n = self._seen[(when, step_id)] = self._seen.get((when, step_id), 0) + 1
        return self._failpoint == (when, step_id if n == 1 else f"{step_id}#{n}")

    def _refresh(self) -> None:
        if not self._running:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        from rich.markup import escape

        text = escape(one_line("; ".join(f"{sid}: {reason}" for sid, reason in self._running.items())))
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def step_started(self, step: Any) -> None:
        import time

        self._running[step.id] = step.reason
        self._started[step.id] = time.monotonic()
        self._refresh()
        if self._point("during", step.id):
            import threading

            threading.Timer(DURING_DELAY, _kill_self).start()

    def step_progress(self, step: Any, text: str) -> None:
        """A long step's progress replaces its line in the spinner (``512 of 1100 MiB (46%), 180 MB/s``)."""
        if step.id in self._running:
            self._running[step.id] = f"{step.reason} — {text}"
            self._refresh()

    def step_done(self, step: Any, note: str) -> None:
        self._running.pop(step.id, None)
        self._refresh()
        from rich.markup import escape

        took = self._took(step.id)
        self.console.print(f"[green]✓[/] {escape(step.id):<28} [dim]{escape(one_line(note))}{took}[/]")
        if self._point("after", step.id):
            _kill_self()

    def step_failed(self, step: Any, error: Exception) -> None:
        self._running.pop(step.id, None)
        self._refresh()
        from rich.markup import escape

        self.console.print(f"[red]✗[/] {escape(step.id)}[dim]{self._took(step.id)}[/]")

    def _took(self, step_id: str) -> str:
        """`` (12.3 s)`` for a step that took a second or more (where a slow run spends its time), else ''."""
        import time

        started = self._started.pop(step_id, None)
        if started is None:
            return ""
        seconds = time.monotonic() - started
        return f" ({seconds:.1f} s)" if seconds >= 1.0 else ""


def print_plan(plan: Plan, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(plan.to_json(), indent=2))
        return
    console = make_console()
    if plan.empty:
        console.print("nothing to do")
    for line in plan.lines():
        console.print(line, markup=False)
