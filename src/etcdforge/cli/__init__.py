"""The ``etcdforge`` command line: parse, call the library, print, map errors to exit codes. Nothing else.

The click group :func:`main` lives in :mod:`etcdforge.cli.app`; each command module registers its commands
on it when imported, so importing this package builds the whole command tree. The command modules import
the library (grpc, cryptography, pydantic) only inside their commands, so ``--help`` and simple commands
start fast.
"""

from __future__ import annotations

# Imported for their side effect: each module registers its commands on ``main``.
from etcdforge.cli import adopt, backup, hosts, kv, local, member, pki, query  # noqa: F401
from etcdforge.cli.app import main

__all__ = ["main"]
