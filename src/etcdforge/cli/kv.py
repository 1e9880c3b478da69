"""``kv put|get|del``: keys and values through etcdforge's own client, printed like etcdctl."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from etcdforge.cli.app import dir_option, main, output_option, run_async, workspace_dir

T = TypeVar("T")


@main.group()
def kv() -> None:
    """put / get / del through etcdforge's own client."""


def _kv_call(directory: Path | None, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from etcdforge.workspace import admin_client, load_workspace

    ws, spec = load_workspace(workspace_dir(directory))

    async def go() -> T:
        async with admin_client(spec, ws) as client:
            return await fn(client)

    return run_async(go())


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
