"""A remote machine over SSH (asyncssh) as a :class:`~etcdforge.hosts.base.Host`.

One connection per host, opened by :func:`connect` and reused: every command is a new exec channel on
it, at most ``max_sessions`` at once (OpenSSH's sshd allows 10 per connection by default).

Trust: the host key is checked against an OpenSSH known_hosts file with OpenSSH's semantics
(:mod:`.known_hosts`): unknown → :class:`HostKeyUnknown` unless ``accept_new_host_keys`` (then recorded,
like ``StrictHostKeyChecking=accept-new``); changed or revoked → :class:`HostKeyChanged`, always.
Authentication is by one identity file only (the spec's ``ssh.identity_file``, else the first of
~/.ssh/id_ed25519, id_ecdsa, id_rsa): no agent, no password, no keyboard-interactive, no ~/.ssh/config —
nothing can prompt.

Remote commands are built by :func:`.base.remote_command` (``shlex.join``), prefixed ``sudo -n --`` when
the target asks for sudo, and run under coreutils ``timeout`` so that a timed-out command really stops.
The file operations are fixed POSIX ``sh`` scripts whose variable parts arrive as positional arguments,
never interpolated into the script text, and use coreutils only (no Python needed on the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from etcdforge.hosts.base import (
    REMOTE_KILL_AFTER,
    REMOTE_TIMEOUT_STATUSES,
    BatchOp,
    RunResult,
    check_result,
    compile_batch,
    failed_op,
    remote_command,
    shell_join,
    stderr_tail,
    validate_mode,
    validate_path,
)
from etcdforge.hosts.errors import (
    HostAuthError,
    HostCommandTimeout,
    HostError,
    HostKeyChanged,
    HostKeyUnknown,
    HostRouteRefused,
    HostUnreachable,
    SudoError,
)
from etcdforge.hosts.known_hosts import (
    HostKeyCheck,
    Verdict,
    append_known_host,
    check_host_key,
    known_keys,
    preferred_algorithms,
)
from etcdforge.hosts.scripts import ABSENT, READ_SCRIPT, SHA256_SCRIPT, WRITE_SCRIPT
from etcdforge.hosts.sshlib import asyncssh

#: ``route_check(address) -> allowed``: called with each resolved IP address before connecting
RouteCheck = Callable[[str], bool]

DEFAULT_MAX_SESSIONS = 8


@dataclass(frozen=True)
class SshTarget:
    """How to reach a host: address, port, login user, client key, and whether to use sudo."""

    host: str
    port: int = 22
    user: str = "root"
    identity_file: Path | None = None
    sudo: bool = False


def allow_any_route(address: str) -> bool:
    """The default route check: everything is allowed."""
    return True


def loopback_only(address: str) -> bool:
    """A strict route check for tests: only loopback addresses (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class SshHost:
    """A connected host. Create with :func:`connect`; ``close()`` when done."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        address: str,
        conn: asyncssh.SSHClientConnection,
        max_sessions: int,
    ) -> None:
        self.name = name
        self.target = target
        self.address = address
        self._conn = conn
        self._sessions = asyncio.Semaphore(max_sessions)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 60,
    ) -> RunResult:
        args = tuple(argv)
        result = await self._exec(args, input, timeout)
        return check_result(self.name, result) if check else result

    async def write_file(
        self, path: str, data: bytes, *, mode: int, owner: str | None = None, group: str | None = None
    ) -> None:
        validate_path(path)
        validate_mode(mode)
        final = PurePosixPath(path)
        tmp = str(final.with_name(f".{final.name}.etcdforge-tmp-{secrets.token_hex(8)}"))
        options = ["-m", f"{mode:04o}"]
        if owner is not None:
            options += ["-o", owner]
        if group is not None:
            options += ["-g", group]
        argv = ("sh", "-c", WRITE_SCRIPT, "sh", tmp, path, str(final.parent), *options)
        result = await self._exec(argv, data, 120)
        check_result(self.name, result, display=f"write {path} (mode {mode:04o})")

    async def make_private_dirs(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        await self.run(["mkdir", "-p", "-m", "0700", "--", *(validate_path(p) for p in paths)])

    async def read_file(self, path: str) -> bytes | None:
        validate_path(path)
        argv = ("sh", "-c", READ_SCRIPT, "sh", path)
        result = await self._exec(argv, None, 120)
        if result.exit_status == ABSENT:
            return None
        return check_result(self.name, result, display=f"read {path}").stdout

    async def sha256(self, paths: Sequence[str]) -> dict[str, str | None]:
        wanted = tuple(validate_path(p) for p in paths)
        if not wanted:
            return {}
        argv = ("sh", "-c", SHA256_SCRIPT, "sh", *wanted)
        result = await self._exec(argv, None, 300)
        check_result(self.name, result, display=f"sha256 of {len(wanted)} file(s)")
        lines = result.stdout.decode("ascii", errors="replace").splitlines()
        if len(lines) != len(wanted):
            raise HostError(
                f"unexpected sha256 output from {self.name}: {len(lines)} lines for {len(wanted)} files",
                host=self.name,
            )
        return {p: (None if h == "-" else h) for p, h in zip(wanted, lines, strict=True)}

    async def apply_batch(self, ops: Sequence[BatchOp], *, timeout: float | None = 120) -> None:
        if not ops:
            return
        script = compile_batch(ops, WRITE_SCRIPT)
        result = await self._exec(("sh", "-s"), script, timeout)
        check_result(self.name, result, display=failed_op(result.stdout, ops))

    def sftp(self) -> AbstractAsyncContextManager[asyncssh.SFTPClient]:
        """An SFTP session on this connection (backup targets)."""
        return self._conn.start_sftp_client()

    async def close(self) -> None:
        self._conn.close()
        await self._conn.wait_closed()

    async def _exec(
        self, argv: tuple[str, ...], input: bytes | None, timeout: float | None, *, sudo: bool | None = None
    ) -> RunResult:
        """Run ``argv`` on a new channel, under ``timeout`` on the host (see :func:`remote_command`).

        Locally we wait a little longer than the remote timeout (so its status can come back); if even
        that passes (a hung connection), the channel is signalled and closed.
        """
        command = remote_command(argv, sudo=self.target.sudo if sudo is None else sudo, timeout=timeout)
        local_timeout = None if timeout is None else timeout + REMOTE_KILL_AFTER + 5
        started = time.monotonic()
        async with self._sessions:
            try:
                # no input (or empty input) means stdin at EOF at once, never a command waiting on it
                process = await self._conn.create_process(
                    command,
                    input=input or None,
                    stdin=asyncssh.PIPE if input else asyncssh.DEVNULL,
                    encoding=None,
                )
            except asyncssh.ChannelOpenError as exc:
                raise HostError(
                    f"cannot open a session on {self.name}: {exc.reason}", host=self.name
                ) from None
            except (asyncssh.Error, OSError) as exc:
                raise HostUnreachable(self.name, self.address, f"connection lost ({_reason(exc)})") from None
            try:
                done = await process.wait(check=False, timeout=local_timeout)
            except asyncssh.TimeoutError as exc:
                _stop(process)
                tail = stderr_tail(exc.stderr if isinstance(exc.stderr, bytes) else b"")
                raise HostCommandTimeout(
                    self.name, command=shell_join(argv), timeout=timeout or 0, stderr_tail=tail
                ) from None
            except (asyncssh.Error, OSError) as exc:
                _stop(process)
                raise HostUnreachable(self.name, self.address, f"connection lost ({_reason(exc)})") from None
            except BaseException:  # cancelled: do not leave the command running
                _stop(process)
                raise
        status = done.returncode if done.returncode is not None else -1
        stdout = done.stdout if isinstance(done.stdout, bytes) else b""
        stderr = done.stderr if isinstance(done.stderr, bytes) else b""
        if (
            timeout is not None
            and status in REMOTE_TIMEOUT_STATUSES
            and time.monotonic() - started >= timeout
        ):
            raise HostCommandTimeout(
                self.name, command=shell_join(argv), timeout=timeout, stderr_tail=stderr_tail(stderr)
            )
        return RunResult(argv, status, stdout, stderr)

    async def _check_sudo(self) -> None:
        result = await self._exec(("true",), None, 30, sudo=True)
        if result.exit_status == 0:
            return
        detail = stderr_tail(result.stderr) or f"sudo exited with status {result.exit_status}"
        if result.exit_status == 127:
            detail = f"sudo is not installed ({detail})"
        raise SudoError(self.name, user=self.target.user, detail=detail)


def _stop(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Best effort: signal the remote command (OpenSSH ≥ 7.9 honours it) and close the channel."""
    with contextlib.suppress(asyncssh.Error, OSError, ValueError):
        process.kill()
    process.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


class _Client(asyncssh.SSHClient):
    """Decides host-key trust itself so that unknown and changed keys can be told apart."""

    def __init__(self, decide: Callable[[asyncssh.SSHKey], bool]) -> None:
        self._decide = decide

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._decide(key)


async def connect(
    name: str,
    target: SshTarget,
    *,
    known_hosts: Path,
    accept_new_host_keys: bool = False,
    connect_timeout: float = 10,
    route_check: RouteCheck = allow_any_route,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
) -> SshHost:
    """Connect to ``target`` (``name`` is the host's name in the spec), verifying its host key.

    Raises :class:`HostUnreachable`, :class:`HostRouteRefused`, :class:`HostKeyUnknown`,
    :class:`HostKeyChanged`, :class:`HostAuthError`, :class:`SudoError` or :class:`HostError`.
    """
    shown = f"{target.host}:{target.port}"
    address = await _resolve(name, target, shown, connect_timeout, route_check)
    shown = (
        f"{address}:{target.port}" if address == target.host else f"{target.host} [{address}]:{target.port}"
    )
    client_keys = await _client_keys(name, target)
    try:
        known = await asyncio.to_thread(known_keys, known_hosts, target.host, address, target.port)
    except OSError as exc:
        raise HostError(f"cannot read {known_hosts}: {exc.strerror}", host=name) from None

    checks: list[HostKeyCheck] = []
    accepted: list[asyncssh.SSHKey] = []

    def decide(key: asyncssh.SSHKey) -> bool:
        check = check_host_key(known, key)
        checks.append(check)
        if check.verdict is Verdict.KNOWN:
            return True
        if check.verdict is Verdict.UNKNOWN and accept_new_host_keys:
            accepted.append(key)
            return True
        return False

    algs = preferred_algorithms(known)
    try:
        conn = await asyncssh.connect(
            address,
            target.port,
            username=target.user,
            client_factory=lambda: _Client(decide),
            # non-None and empty: every key goes through validate_host_public_key
            known_hosts=([], [], []),
            server_host_key_algs=algs if algs else (),
            client_keys=client_keys,
            agent_path=None,
            password=None,
            kbdint_auth=False,
            gss_auth=False,
            gss_kex=False,
            host_based_auth=False,
            preferred_auth="publickey",
            config=None,  # no ~/.ssh/config: the spec says how to connect
            x509_trusted_certs=None,
            connect_timeout=connect_timeout,
            keepalive_interval=15,
            keepalive_count_max=4,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _host_key_error(name, shown, checks, known_hosts, str(exc)) from None
    except asyncssh.PermissionDenied:
        await _record(name, accepted, known_hosts, target)  # the key exchange proved the host key
        identity = target.identity_file or default_identity()
        raise HostAuthError(
            name,
            user=target.user,
            identity_file=_str(identity),
            reason="the server rejected the key" if identity is not None else NO_IDENTITY,
        ) from None
    except asyncssh.KeyExchangeFailed as exc:
        hint = "the host no longer offers a host key of the type recorded in known_hosts" if algs else None
        raise HostError(
            f"SSH key exchange with {name} ({shown}) failed: {exc.reason}", host=name, hint=hint
        ) from None
    except TimeoutError:
        raise HostUnreachable(name, shown, f"timed out after {connect_timeout:g}s") from None
    except asyncssh.Error as exc:
        raise HostUnreachable(name, shown, f"SSH connection failed ({_reason(exc)})") from None
    except OSError as exc:
        raise HostUnreachable(name, shown, _reason(exc).lower()) from None
    try:
        await _record(name, accepted, known_hosts, target)
        host = SshHost(name, target, address, conn, max_sessions)
        if target.sudo:
            await host._check_sudo()
    except BaseException:
        conn.close()
        await conn.wait_closed()
        raise
    return host


async def _resolve(name: str, target: SshTarget, shown: str, timeout: float, route_check: RouteCheck) -> str:
    """Resolve the target to IP addresses and return the first the route check allows."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), timeout
        )
    except TimeoutError:
        raise HostUnreachable(name, shown, "name lookup timed out") from None
    except OSError as exc:
        raise HostUnreachable(name, shown, f"cannot resolve the name ({_reason(exc)})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if route_check(address):
            return address
    raise HostRouteRefused(name, addresses[0] if addresses else target.host)


#: tried, in OpenSSH's order, when the spec names no identity file (DSA keys are not)
DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")


def default_identity(home: Path | None = None) -> Path | None:
    """The first of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exists (what `ssh` would offer first)."""
    ssh_dir = (home or Path.home()) / ".ssh"
    return next((ssh_dir / n for n in DEFAULT_IDENTITIES if (ssh_dir / n).is_file()), None)


NO_IDENTITY = (
    "no identity file: ssh.identity_file is not set and ~/.ssh has no id_ed25519, id_ecdsa or id_rsa"
)


async def _client_keys(name: str, target: SshTarget) -> Sequence[asyncssh.SSHKey] | None:
    """The identity file's key (loaded here so key problems are told apart from a rejected key): the
    spec's, else the default one (:func:`default_identity`) — one key, named in every error, never a
    silent fall-back to whatever asyncssh would look for. None: there is no identity (no public-key
    login is tried; the server's refusal then says so)."""
    path = target.identity_file or default_identity()
    if path is None:
        return None
    try:
        key = await asyncio.to_thread(asyncssh.read_private_key, path)
    except OSError as exc:
        raise HostAuthError(
            name,
            user=target.user,
            identity_file=str(path),
            reason=f"cannot read the identity file ({exc.strerror})",
        ) from None
    except asyncssh.KeyEncryptionError:
        raise HostAuthError(
            name,
            user=target.user,
            identity_file=str(path),
            reason="the identity file is passphrase-protected (not supported: nothing may prompt)",
        ) from None
    except asyncssh.KeyImportError:
        raise HostAuthError(
            name, user=target.user, identity_file=str(path), reason="the identity file is not a private key"
        ) from None
    return [key]


async def _record(name: str, accepted: list[asyncssh.SSHKey], known_hosts: Path, target: SshTarget) -> None:
    for key in accepted:
        try:
            await asyncio.to_thread(append_known_host, known_hosts, target.host, target.port, key)
        except OSError as exc:
            raise HostError(
                f"cannot record the host key of {name} in {known_hosts}: {exc.strerror}", host=name
            ) from None
    accepted.clear()


def _host_key_error(
    name: str, shown: str, checks: list[HostKeyCheck], known_hosts: Path, detail: str
) -> HostError:
    if not checks:  # e.g. a host certificate: we only verify plain keys
        return HostError(f"cannot verify the host key of {name} ({shown}): {detail}", host=name)
    check = checks[-1]
    if check.verdict is Verdict.UNKNOWN:
        return HostKeyUnknown(name, shown, check.fingerprint, str(known_hosts))
    return HostKeyChanged(
        name,
        shown,
        new_fingerprint=check.fingerprint,
        old_fingerprints=check.old_fingerprints,
        known_hosts=str(known_hosts),
        lines=check.lines,
        revoked=check.verdict is Verdict.REVOKED,
    )


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
