"""Text from hosts, etcd and file names is printed literally (security item 7): a `[/]` in a host's file
name or a command line must not raise MarkupError inside the step printer in the middle of an apply, and
control characters never reach the terminal."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from etcdforge.cli.app import StepPrinter, one_line, plain
from etcdforge.plan import Step, WriteFile

HOSTILE = "/etc/etcd/[/]bad [bold]x[/bold] \x1b[31mred\x1b[0m\nnext line"


def printer() -> tuple[StepPrinter, io.StringIO]:
    out = io.StringIO()
    return StepPrinter(Console(file=out, width=300, highlight=False)), out


def test_the_step_printer_prints_host_text_literally() -> None:
    p, out = printer()
    step: Any = Step("etcd1/file:[/]x", "etcd1", WriteFile("/x", b""), HOSTILE)
    p.step_started(step)
    p.step_done(step, HOSTILE)
    p.step_failed(step, RuntimeError(HOSTILE))
    text = out.getvalue()
    assert "[/]bad [bold]x[/bold]" in text and "etcd1/file:[/]x" in text
    assert "\x1b[31m" not in text and "\\x1b[31mred" in text
    assert "\\nnext line" in text


def test_plain_and_one_line() -> None:
    assert one_line("a\nb\tc\x00") == "a\\nb\\tc\\x00"
    console = Console(file=io.StringIO(), width=300)
    console.print(f"[red]x[/] {plain(HOSTILE)}")  # would raise MarkupError without plain()
    assert "[/]bad" in console.file.getvalue()  # type: ignore[attr-defined]
