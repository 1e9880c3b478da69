"""The host port: the one small Protocol through which etcdforge touches a machine.

Every implementation (:mod:`.local`, :mod:`.ssh`, test fakes) offers the same five coroutines: run an
argv, write a file atomically with its final mode/owner from creation, read a file, hash many files in
one round trip, close. Commands are always argv lists; :func:`shell_join` is the ONE place where an
argv becomes shell text (the remote command line of an SSH channel, and the display form in errors).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from etcdforge.hosts.errors import HostCommandError

#: how much of a failed command's stderr goes into the error message
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 1000


@dataclass(frozen=True)
class RunResult:
    """What a finished command gave back. ``exit_status`` is negative (``-SIGNAL``) if it was killed."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@runtime_checkable
class Host(Protocol):
    """A machine etcdforge can act on. ``name`` is the host's name in the cluster spec."""

    name: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 60,
    ) -> RunResult:
        """Run ``argv``; with ``check`` a non-zero exit raises :class:`HostCommandError`."""
        ...

    async def write_file(
        self, path: str, data: bytes, *, mode: int, owner: str | None = None, group: str | None = None
    ) -> None:
        """Replace ``path`` atomically; the new file has ``mode``/owner/group from its creation."""
        ...

    async def read_file(self, path: str) -> bytes | None:
        """The content of ``path``, or None if it does not exist."""
        ...

    async def sha256(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Hex SHA-256 of each regular file in ``paths`` (None if absent), in one round trip."""
        ...

    async def close(self) -> None:
        """Release the connection; idempotent."""
        ...


def shell_join(argv: Sequence[str]) -> str:
    """The one argv → POSIX shell text conversion (``shlex.join``): each argument arrives verbatim."""
    if isinstance(argv, str):  # a str is a Sequence[str]: refuse it, it is always a mistake here
        raise TypeError("argv must be a list of arguments, not a string")
    if not argv:
        raise ValueError("argv must not be empty")
    return shlex.join(argv)


#: a remote command still running this long after its TERM (at the timeout) gets KILL
REMOTE_KILL_AFTER = 5.0
#: exit statuses of coreutils ``timeout`` when it stopped the command (TERM; KILL)
REMOTE_TIMEOUT_STATUSES = (124, 128 + 9)


def remote_command(argv: Sequence[str], *, sudo: bool, timeout: float | None = None) -> str:
    """The command line for an SSH exec channel.

    With ``sudo``: ``sudo -n --`` (non-interactive: fails instead of prompting). With ``timeout``: the
    command runs under coreutils ``timeout`` on the host, because closing the channel does not stop a
    remote command, and sshd refuses signal requests for root logins (no privilege separation then).
    """
    prefix: list[str] = ["sudo", "-n", "--"] if sudo else []
    if timeout is not None:
        prefix += ["timeout", "-k", f"{REMOTE_KILL_AFTER:g}s", f"{timeout:.3f}s"]
    return shell_join([*prefix, *argv])


def stderr_tail(stderr: bytes) -> str:
    """The last lines of ``stderr`` as one line (``" | "``-separated), bounded in size."""
    text = stderr.decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    tail = " | ".join(lines[-STDERR_TAIL_LINES:])
    if len(tail) > STDERR_TAIL_CHARS:
        tail = "…" + tail[-STDERR_TAIL_CHARS:]
    return tail


def check_result(host: str, result: RunResult, *, display: str | None = None) -> RunResult:
    """Raise :class:`HostCommandError` for a non-zero exit; ``display`` replaces the quoted argv."""
    if result.exit_status != 0:
        raise HostCommandError(
            host,
            command=display if display is not None else shell_join(result.argv),
            exit_status=result.exit_status,
            stderr_tail=stderr_tail(result.stderr),
        )
    return result


def validate_path(path: str) -> str:
    """Paths on a host must be absolute (so never mistaken for an option) and free of NUL."""
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"host paths must be absolute: {path!r}")
    return path


def validate_mode(mode: int) -> int:
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode out of range: {mode:#o}")
    return mode
