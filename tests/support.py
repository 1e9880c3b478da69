"""Helpers shared by the test packages."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m etcdforge ARGS`` as a user would; return the completed process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=180,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"etcdforge {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
