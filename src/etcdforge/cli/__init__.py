"""The ``etcdforge`` command line: parse, call the library, print, map errors to exit codes. Nothing else.

The click group :func:`main` lives in :mod:`etcdforge.cli.app`; each command module registers its commands
on it when imported, so importing this package builds the whole command tree. The command modules import
the library (grpc, cryptography, pydantic) only inside their commands, so ``--help`` and simple commands
start fast.
"""

from __future__ import annotations

# Imported for their side effect: each module registers its commands on ``main``.
from etcdforge.cli import adopt, backup, client, hosts, kv, local, maintenance, member, monitor, pki, query  # noqa: F401
from etcdforge.cli.app import main


def entry() -> None:
    """The ``etcdforge`` command: :func:`main`, then an exit that skips the native libraries' finalizers
    (gRPC's core and the object-store client run threads of their own; torn down while the interpreter
    finalizes they can abort the process *after* the command finished — once seen as SIGABRT after a
    correct "bucket does not exist" error). Output is flushed first; every file and connection was closed
    by the command itself."""
    import contextlib
    import os
    import sys

    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


__all__ = ["entry", "main"]
