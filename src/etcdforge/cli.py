"""The ``etcdforge`` command line: parse, call the library, print, map errors to exit codes. Nothing else.

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


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (scripts, CI logs) gets a wide fixed width instead of rich's 80-column fallback,
    # so tables are not truncated.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _fail(message: str, code: int = 1) -> NoReturn:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True)
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
            err = _console(stderr=True)
            from rich.markup import escape

            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, MemberStartError):
                cause = cause.__cause__
            if isinstance(cause, MemberStartError) and cause.log_tail:
                err.print(f"[dim]--- last lines of {cause.member}'s log ---[/]")
                err.print(escape(cause.log_tail), markup=False)
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


def _dir(directory: Path | None) -> Path:
    return directory if directory is not None else _default_dir()


class _StepPrinter:
    """Progress for plan execution: a spinner naming the running step(s), one line per finished step.

    Steps of a batch run concurrently, so the spinner shows every running step id.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._running: dict[str, str] = {}
        self._status: Any = None

    def _refresh(self) -> None:
        if not self._running:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        text = "; ".join(f"{sid}: {reason}" for sid, reason in self._running.items())
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def step_started(self, step: Any) -> None:
        self._running[step.id] = step.reason
        self._refresh()

    def step_done(self, step: Any, note: str) -> None:
        self._running.pop(step.id, None)
        self._refresh()
        self.console.print(f"[green]✓[/] {step.id:<28} [dim]{note}[/]")

    def step_failed(self, step: Any, error: Exception) -> None:
        self._running.pop(step.id, None)
        self._refresh()
        self.console.print(f"[red]✗[/] {step.id}")


def _print_plan(plan: Plan, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(plan.to_json(), indent=2))
        return
    console = _console()
    if plan.empty:
        console.print("nothing to do")
    for line in plan.lines():
        console.print(line, markup=False)


@main.command()
@dir_option
@click.option("--members", "-n", type=int, default=None, help="Members for a new cluster (default 3).")
@click.option("--etcd-bin", type=str, default=None, help="etcd binary to use.")
@click.option("--name", type=str, default=None, help="Cluster name for a new workspace (default: local).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for health.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@output_option
def up(
    directory: Path | None,
    members: int | None,
    etcd_bin: str | None,
    name: str | None,
    timeout: float,
    dry_run: bool,
    output: str,
) -> None:
    """Create (or start) a local mutual-TLS cluster; never wipes data."""
    from etcdforge import topology
    from etcdforge.operations import lifecycle

    d = _dir(directory)
    console = _console()
    reporter = None if (dry_run or output == "json") else _StepPrinter(console)
    result = _run(
        lifecycle.up(
            d,
            members=members,
            etcd_bin=etcd_bin,
            name=name,
            timeout=timeout,
            dry_run=dry_run,
            reporter=reporter,
        )
    )
    for warning in result.warnings:
        _console(stderr=True).print(f"[yellow]warning:[/] {warning}")
    if dry_run:
        _print_plan(result.plan, output)
        return
    spec = result.spec
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "dir": str(d.resolve()),
                    "etcd": {"path": str(result.binary.path), "version": result.binary.version_str},
                    "endpoints": list(topology.client_urls(spec)),
                    "changes": len(result.plan.steps),
                },
                indent=2,
            )
        )
        return
    if result.plan.empty:
        console.print("cluster already up; nothing to do")
    console.print(
        f"[bold green]{len(spec.members)}-member cluster {spec.name!r} is healthy[/] "
        f"(etcd {result.binary.version_str}, {d})"
    )
    console.print("endpoints: " + ",".join(topology.client_urls(spec)))
    flag = "" if directory is None else f" --dir {d}"
    console.print(f'use etcdctl:  eval "$(etcdforge env{flag})" && etcdctl endpoint health')


@main.command()
@dir_option
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
def down(directory: Path | None, dry_run: bool) -> None:
    """Stop the local members, keeping all data."""
    from etcdforge.operations import lifecycle

    console = _console()
    plan = _run(
        lifecycle.down(_dir(directory), dry_run=dry_run, reporter=None if dry_run else _StepPrinter(console))
    )
    if dry_run:
        _print_plan(plan, "table")
    elif plan.empty:
        console.print("no member was running")
    else:
        console.print("stopped; data kept (run `etcdforge up` to start again)")


@main.command()
@dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
def destroy(directory: Path | None, yes: bool, dry_run: bool) -> None:
    """Stop the local members and delete the workspace (data, PKI, spec)."""
    from etcdforge.operations import lifecycle

    d = _dir(directory)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            _fail(f"destroy deletes {d} with all data; pass --yes to confirm")
        click.confirm(f"Delete {d} with all its data and certificates?", abort=True)
    plan = _run(lifecycle.destroy(d, dry_run=dry_run, reporter=None if dry_run else _StepPrinter(_console())))
    if dry_run:
        _print_plan(plan, "table")
    else:
        _console().print(f"destroyed {d}")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


@main.command()
@dir_option
@output_option
def status(directory: Path | None, output: str) -> None:
    """Per member: version, leader, raft term/index, DB size, learner, errors."""
    from etcdforge.operations import query
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(_dir(directory))
    rows = _run(query.status(spec, ws))
    if output == "json":
        data = []
        for r in rows:
            s = r.status
            data.append(
                {
                    "member": r.member,
                    "endpoint": r.endpoint,
                    "error": r.error,
                    **(
                        {
                            "id": f"{s.member_id:x}",
                            "version": s.version,
                            "is_leader": s.leader == s.member_id,
                            "leader": f"{s.leader:x}",
                            "raft_term": s.raft_term,
                            "raft_index": s.raft_index,
                            "raft_applied_index": s.raft_applied_index,
                            "db_size": s.db_size,
                            "db_size_in_use": s.db_size_in_use,
                            "is_learner": s.is_learner,
                            "revision": s.revision,
                            "errors": list(s.errors),
                        }
                        if s is not None
                        else {}
                    ),
                }
            )
        click.echo(json.dumps(data, indent=2))
    else:
        from rich.table import Table

        table = Table(title=f"cluster {spec.name}")
        for col in (
            "member",
            "endpoint",
            "id",
            "version",
            "leader",
            "raft term",
            "raft index",
            "db size",
            "learner",
            "errors",
        ):
            table.add_column(col)
        for r in rows:
            s = r.status
            if s is None:
                table.add_row(r.member, r.endpoint, "", "", "", "", "", "", "", f"[red]{r.error}[/]")
                continue
            table.add_row(
                r.member,
                r.endpoint,
                f"{s.member_id:x}",
                s.version,
                "[bold]yes[/]" if s.leader == s.member_id else "no",
                str(s.raft_term),
                str(s.raft_index),
                _size(s.db_size),
                "yes" if s.is_learner else "no",
                ", ".join(s.errors),
            )
        _console().print(table)
    if any(r.error for r in rows):
        sys.exit(1)


@main.command()
@dir_option
@output_option
def health(directory: Path | None, output: str) -> None:
    """Like `etcdctl endpoint health`; exits non-zero if any member is unhealthy."""
    from etcdforge import topology
    from etcdforge.operations import query
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(_dir(directory))
    results = _run(query.health(spec, ws))
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "member": n,
                        "endpoint": h.endpoint,
                        "healthy": h.healthy,
                        "took": h.took,
                        "error": h.error,
                    }
                    for n, h in results
                ],
                indent=2,
            )
        )
    else:
        console = _console()
        for name, h in results:
            url = topology.client_url(spec, spec.member(name))
            if h.healthy:
                console.print(
                    f"[green]{url} is healthy[/]: successfully committed proposal: "
                    f"took = {h.took * 1000:.1f}ms ({name})"
                )
            else:
                console.print(f"[red]{url} is unhealthy[/]: {h.error} ({name})", markup=True)
    if not all(h.healthy for _, h in results):
        sys.exit(1)


@main.command()
@dir_option
@output_option
def members(directory: Path | None, output: str) -> None:
    """The cluster's member list (as etcd itself reports it)."""
    from etcdforge.operations import query
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(_dir(directory))
    listed = _run(query.members(spec, ws))
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "id": f"{m.id:x}",
                        "name": m.name,
                        "peer_urls": list(m.peer_urls),
                        "client_urls": list(m.client_urls),
                        "is_learner": m.is_learner,
                    }
                    for m in listed
                ],
                indent=2,
            )
        )
        return
    from rich.table import Table

    table = Table()
    for col in ("id", "status", "name", "peer urls", "client urls", "learner"):
        table.add_column(col)
    for m in listed:
        table.add_row(
            f"{m.id:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peer_urls),
            ",".join(m.client_urls),
            "yes" if m.is_learner else "no",
        )
    _console().print(table)


@main.command()
@dir_option
def env(directory: Path | None) -> None:
    """Shell exports for plain etcdctl: eval "$(etcdforge env)"."""
    from etcdforge import render, topology
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(_dir(directory))
    sys.stdout.write(render.etcdctl_env(topology.client_urls(spec), ws.client_paths()).decode())


def _etcdctl_argv(directory: Path | None) -> list[str]:
    from etcdforge import binaries, render, topology
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(_dir(directory))
    explicit = spec.etcd.binary
    ctl = binaries.sibling_tool(Path(explicit), "etcdctl") if explicit else binaries.find_tool("etcdctl")
    return [str(ctl), *render.etcdctl_tls_args(topology.client_urls(spec), ws.client_paths())]


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@dir_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(directory: Path | None, args: tuple[str, ...]) -> None:
    """Run etcdctl with the cluster's endpoints and TLS flags: etcdforge ctl -- member list -w table."""
    argv = _etcdctl_argv(directory) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


def _print_host_plan(plan: Plan) -> None:
    """The plan grouped by host, with diffs of changed text files (secrets are never shown)."""
    from rich.markup import escape

    from etcdforge.plan import PutFile

    console = _console()
    if plan.empty:
        console.print("[green]no changes[/]: the cluster matches the spec")
        return
    by_host: dict[str, list[Any]] = {}
    for step in plan.steps:
        by_host.setdefault(step.host, []).append(step)
    for host, steps in by_host.items():
        console.print(f"[bold]{escape(host)}[/]")
        for step in steps:
            console.print(f"  [yellow]~[/] {escape(step.id)}  [dim]{escape(step.reason)}[/]")
            action = step.action
            if isinstance(action, PutFile) and action.diff and not action.secret:
                for line in action.diff.splitlines():
                    style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
                    console.print(f"      [{style}]{escape(line)}[/]")
    console.print(f"{len(plan.steps)} change(s)")


@main.command("plan")
@dir_option
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@click.option("--force", is_flag=True, help="Go on although a member's data dir is unknown to the cluster.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: no changes, 2: changes, 1: error.")
@output_option
def plan_cmd(
    directory: Path | None, accept_new_host_keys: bool, force: bool, detailed_exitcode: bool, output: str
) -> None:
    """Show what `apply` would change on the hosts; changes nothing."""
    from etcdforge.operations import deploy

    plan = _run(deploy.make_plan(_dir(directory), accept_new_host_keys=accept_new_host_keys, force=force))
    for warning in plan.warnings:
        _console(stderr=True).print(f"[yellow]warning:[/] {warning}")
    if output == "json":
        click.echo(json.dumps(plan.to_json(), indent=2))
    else:
        _print_host_plan(plan)
    if detailed_exitcode and not plan.empty:
        sys.exit(2)


@main.command()
@dir_option
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@click.option("--force", is_flag=True, help="Go on although a member's data dir is unknown to the cluster.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds per health gate.")
def apply(directory: Path | None, yes: bool, accept_new_host_keys: bool, force: bool, timeout: float) -> None:
    """Converge the hosts to the spec: prepare, install, start or roll-restart, health-gated."""
    from etcdforge.operations import deploy

    d = _dir(directory)
    if not yes:
        preview = _run(deploy.make_plan(d, accept_new_host_keys=accept_new_host_keys, force=force))
        _print_host_plan(preview)
        if preview.empty:
            return
        if not sys.stdin.isatty():
            _fail("apply changes hosts; pass --yes to confirm")
        click.confirm("Apply these changes?", abort=True)
        accept_new_host_keys = False  # recorded by the preview already
    console = _console()
    plan = _run(
        deploy.apply(
            d,
            accept_new_host_keys=accept_new_host_keys,
            force=force,
            timeout=timeout,
            reporter=_StepPrinter(console),
        )
    )
    if plan.empty:
        console.print("[green]no changes[/]: the cluster matches the spec")
    else:
        console.print(f"[bold green]applied {len(plan.steps)} change(s)[/]; cluster healthy")


@main.command()
@dir_option
@click.option("--member", "members", multiple=True, required=True, help="NAME=ADDRESS, once per member.")
@click.option("--name", default=None, help="Cluster name (default: the directory's name).")
@click.option("--ssh-user", default="root", show_default=True)
@click.option("--ssh-port", type=int, default=22, show_default=True)
@click.option(
    "--ssh-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Private key file."
)
@click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--sudo", is_flag=True, help="Use sudo -n on the hosts (non-root SSH user).")
@click.option(
    "--etcd-binary",
    default="system",
    show_default=True,
    help="system (already on the hosts), a local PATH to upload, or a VERSION to download.",
)
@click.option("--etcd-sha256", default=None, help="SHA-256 of the release tarball (with a VERSION).")
@click.option("--force", is_flag=True, help="Overwrite an existing cluster.yaml.")
def init(
    directory: Path | None,
    members: tuple[str, ...],
    name: str | None,
    ssh_user: str,
    ssh_port: int,
    ssh_key: Path | None,
    known_hosts: Path | None,
    sudo: bool,
    etcd_binary: str,
    etcd_sha256: str | None,
    force: bool,
) -> None:
    """Write a commented cluster.yaml for your own hosts: --member etcd1=192.168.10.80 …"""
    from etcdforge.operations import init as init_op

    d = _dir(directory)
    path = init_op.write_spec(
        d,
        members=members,
        name=name,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        sudo=sudo,
        etcd_binary=etcd_binary,
        etcd_sha256=etcd_sha256,
        force=force,
    )
    _console().print(f"wrote {path}; next: etcdforge plan --dir {d}, then etcdforge apply --dir {d}")


@main.group()
def member() -> None:
    """Membership changes: add (learner, then promote), remove, replace — one at a time, quorum-safe."""


def _print_member_result(result: Any, dry_run: bool, output: str, done: str) -> None:
    err = _console(stderr=True)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    if dry_run:
        _print_plan(result.plan, output)
        if result.note:
            _console().print(result.note)
        return
    if output == "json":
        click.echo(json.dumps(result.plan.to_json(), indent=2))
        return
    _console().print(result.note or done)


@member.command("add")
@dir_option
@click.argument("name")
@click.option("--address", default=None, help="The member's IP (local mode: the next free 127.0.0.x).")
@click.option("--dns-name", "dns_names", multiple=True, help="Extra DNS names for its certificates.")
@click.option("--ssh-host", default=None, help="Where to connect (default: the address).")
@click.option("--ssh-port", type=int, default=None)
@click.option("--ssh-user", default=None)
@click.option("--ssh-key", default=None, help="Private key file for this host.")
@click.option("--sudo/--no-sudo", default=None)
@click.option("--etcd-bin", default=None, help="Local mode: etcd binary for the new member.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to join and catch up.")
@click.option("--accept-new-host-keys", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@output_option
def member_add(
    directory: Path | None,
    name: str,
    address: str | None,
    dns_names: tuple[str, ...],
    ssh_host: str | None,
    ssh_port: int | None,
    ssh_user: str | None,
    ssh_key: str | None,
    sudo: bool | None,
    etcd_bin: str | None,
    timeout: float,
    accept_new_host_keys: bool,
    dry_run: bool,
    output: str,
) -> None:
    """Add NAME as a learner, start it, promote it once in sync; roll back if it never joins."""
    from etcdforge.operations import membership
    from etcdforge.spec import MemberSsh

    ssh = None
    if any(v is not None for v in (ssh_host, ssh_port, ssh_user, ssh_key, sudo)):
        ssh = MemberSsh(host=ssh_host, port=ssh_port, user=ssh_user, identity_file=ssh_key, sudo=sudo)
    reporter = None if (dry_run or output == "json") else _StepPrinter(_console())
    result = _run(
        membership.add(
            _dir(directory), name, address=address, dns_names=dns_names, ssh=ssh, etcd_bin=etcd_bin,
            timeout=timeout, dry_run=dry_run, accept_new_host_keys=accept_new_host_keys, reporter=reporter,
        )
    )  # fmt: skip
    _print_member_result(result, dry_run, output, f"[bold green]{name} joined[/] as a voting member")


@member.command("remove")
@dir_option
@click.argument("name")
@click.option("--keep-data", is_flag=True, help="Do not wipe the removed member's data dir.")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--accept-new-host-keys", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@output_option
def member_remove(
    directory: Path | None,
    name: str,
    keep_data: bool,
    timeout: float,
    accept_new_host_keys: bool,
    dry_run: bool,
    output: str,
) -> None:
    """Remove NAME (never below quorum; the leader hands over first); stop it and wipe its data."""
    from etcdforge.operations import membership

    reporter = None if (dry_run or output == "json") else _StepPrinter(_console())
    result = _run(
        membership.remove(
            _dir(directory), name, keep_data=keep_data, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter,
        )
    )  # fmt: skip
    _print_member_result(result, dry_run, output, f"[bold green]{name} removed[/]")


@member.command("replace")
@dir_option
@click.argument("name")
@click.option("--address", default=None, help="A new address (default: the same).")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--accept-new-host-keys", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@output_option
def member_replace(
    directory: Path | None, name: str, address: str | None, timeout: float, accept_new_host_keys: bool,
    dry_run: bool, output: str,
) -> None:  # fmt: skip
    """Replace a dead or corrupted member: remove, wipe, add back as a learner, promote."""
    from etcdforge.operations import membership

    reporter = None if (dry_run or output == "json") else _StepPrinter(_console())
    result = _run(
        membership.replace(
            _dir(directory), name, address=address, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter,
        )
    )  # fmt: skip
    _print_member_result(result, dry_run, output, f"[bold green]{name} replaced[/]")


@main.group()
def kv() -> None:
    """put / get / del through etcdforge's own client."""


def _kv_call(directory: Path | None, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from etcdforge.workspace import admin_client, load_workspace

    ws, spec = load_workspace(_dir(directory))

    async def go() -> T:
        async with admin_client(spec, ws) as client:
            return await fn(client)

    return _run(go())


@kv.command("put")
@dir_option
@click.argument("key")
@click.argument("value")
def kv_put(directory: Path | None, key: str, value: str) -> None:
    """Write KEY=VALUE."""
    _kv_call(directory, lambda c: c.put(key, value))
    click.echo("OK")


@kv.command("get")
@dir_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="All keys starting with KEY.")
@click.option("--keys-only", is_flag=True, help="Print keys only.")
@output_option
def kv_get(directory: Path | None, key: str, prefix: bool, keys_only: bool, output: str) -> None:
    """Read KEY (or a prefix), printed like etcdctl: key line, value line."""
    result = _kv_call(directory, lambda c: c.get(key, prefix=prefix, keys_only=keys_only))
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "revision": result.revision,
                    "count": result.count,
                    "kvs": [
                        {
                            "key": kv_.key.decode(errors="replace"),
                            **({} if keys_only else {"value": kv_.value.decode(errors="replace")}),
                            "create_revision": kv_.create_revision,
                            "mod_revision": kv_.mod_revision,
                            "version": kv_.version,
                        }
                        for kv_ in result.kvs
                    ],
                },
                indent=2,
            )
        )
        return
    out = sys.stdout.buffer
    for item in result.kvs:
        out.write(item.key + b"\n")
        if not keys_only:
            out.write(item.value + b"\n")
    out.flush()


@kv.command("del")
@dir_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="All keys starting with KEY.")
def kv_del(directory: Path | None, key: str, prefix: bool) -> None:
    """Delete KEY (or a prefix); prints the number deleted, like etcdctl."""
    deleted = _kv_call(directory, lambda c: c.delete(key, prefix=prefix))
    click.echo(str(deleted))


@main.group()
def pki() -> None:
    """Certificates: inspect (more to come: check, renew, rotate-ca)."""


@pki.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option
def pki_show(file: Path, output: str) -> None:
    """Print a certificate like `cfssl certinfo -cert FILE` (-o json) or as a table."""
    from etcdforge.pki import certinfo_json, describe, load_cert

    cert = load_cert(file)
    if output == "json":
        click.echo(certinfo_json(cert))
        return
    from rich.table import Table

    table = Table(show_header=False, title=str(file))
    table.add_column(style="bold")
    table.add_column()
    for k, v in describe(cert):
        table.add_row(k, v)
    _console().print(table)
