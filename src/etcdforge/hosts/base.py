"""The host port: the one small Protocol through which etcdforge touches a machine.

Every implementation (:mod:`.local`, :mod:`.ssh`, test fakes) offers the same coroutines: run an argv,
write a file atomically with its final mode/owner from creation, read a file, make private directories,
hash many files in one round trip, run a batch of those in one round trip, close. Commands are always
argv lists; :func:`shell_join` is the ONE place where an argv becomes shell text (the remote command
line of an SSH channel, and the display form in errors).
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

    async def make_private_dirs(self, paths: Sequence[str]) -> None:
        """Create each missing directory of ``paths`` (and its parents) as ``mkdir -p -m 0700`` does: a
        created leaf is 0700; one that exists is left as it is."""
        ...

    async def sha256(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Hex SHA-256 of each regular file in ``paths`` (None if absent), in one round trip."""
        ...

    async def apply_batch(self, ops: Sequence[BatchOp], *, timeout: float | None = 120) -> None:
        """Carry out ``ops`` in order in ONE round trip (one SSH channel), stopping at the first failure.

        Every session on a host costs a PAM/logind login there (~0.1-0.2 s, serialised by the host), so
        preparing a host is one batch, not a dozen commands.
        """
        ...

    async def close(self) -> None:
        """Release the connection; idempotent."""
        ...


@dataclass(frozen=True)
class WriteOp:
    """Write ``data`` to ``path`` atomically, mode/owner from creation (as :meth:`Host.write_file`)."""

    path: str
    data: bytes
    mode: int
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class CommandOp:
    """Run ``argv``; a non-zero exit stops the batch."""

    argv: tuple[str, ...]


BatchOp = WriteOp | CommandOp

#: larger contents go through :meth:`Host.write_file` (a batch carries data inline in its script)
MAX_BATCH_WRITE = 256 * 1024


def compile_batch(ops: Sequence[BatchOp], write_script: str) -> bytes:
    """The POSIX sh script (fed to ``sh -s`` on stdin) that performs ``ops`` in order.

    Every command line is built from an argv by :func:`shell_join` — no value is interpolated into shell
    text any other way. A write pipes the base64 of its data through ``base64 -d`` into the fixed
    ``write_script`` (temp file with final mode/owner, then rename). After each op the script prints
    ``etcdforge-op N`` so a failure can name the op that failed.

    The whole body is one brace group, closed on the last line: ``sh -s`` executes commands as they
    arrive, so a connection dropped mid-script would otherwise run a cut last line (``-m 0600`` read as
    ``-m 06``). The shell parses a compound command completely before running any of it, and a group
    cut anywhere is a syntax error: nothing runs. (Not a function called on the last line: a cut call
    is a prefix of its name, and ``etcd`` is a prefix of ``etcdforge_…``.)
    """
    import base64
    import secrets as _secrets
    from pathlib import PurePosixPath

    lines = ["{", "set -e", "umask 077"]
    for index, op in enumerate(ops):
        if isinstance(op, CommandOp):
            lines.append(shell_join(op.argv))
        else:
            validate_path(op.path)
            validate_mode(op.mode)
            if len(op.data) > MAX_BATCH_WRITE:
                raise ValueError(f"{op.path}: {len(op.data)} bytes is too large for a batch; use write_file")
            final = PurePosixPath(op.path)
            tmp = str(final.with_name(f".{final.name}.etcdforge-tmp-{_secrets.token_hex(8)}"))
            options = ["-m", f"{op.mode:04o}"]
            if op.owner is not None:
                options += ["-o", op.owner]
            if op.group is not None:
                options += ["-g", op.group]
            payload = base64.b64encode(op.data).decode()
            lines.append(
                " | ".join(
                    (
                        shell_join(["printf", "%s", payload]),
                        shell_join(["base64", "-d"]),
                        shell_join(
                            ["sh", "-c", write_script, "sh", tmp, op.path, str(final.parent), *options]
                        ),
                    )
                )
            )
        lines.append(shell_join(["echo", f"etcdforge-op {index}"]))
    lines += ["}"]
    return ("\n".join(lines) + "\n").encode()


def failed_op(stdout: bytes, ops: Sequence[BatchOp]) -> str:
    """Describe the op a failed batch stopped at (the one after the last ``etcdforge-op N`` marker)."""
    done = -1
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith("etcdforge-op "):
            done = int(line.split()[1])
    index = done + 1
    if index >= len(ops):
        return "after the last step"
    op = ops[index]
    return f"write {op.path}" if isinstance(op, WriteOp) else shell_join(op.argv)


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
