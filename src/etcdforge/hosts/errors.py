"""Errors raised by the host transports (``etcdforge.hosts``), all under :class:`EtcdforgeError`.

::

    EtcdforgeError
     └── HostError              something went wrong talking to a host (``host`` names it)
          ├── HostUnreachable   no TCP/SSH connection: refused, timed out, no route, name unknown
          ├── HostRouteRefused  the injected route check does not allow connecting to that address
          ├── HostKeyUnknown    the host key is not in known_hosts (accept it with --accept-new-host-keys)
          ├── HostKeyChanged    the host key differs from the one recorded: always refused
          ├── HostAuthError     our client key was rejected (or cannot be loaded)
          ├── SudoError         ``sudo -n`` does not work for the login user
          └── HostCommandError  a command exited non-zero (``check=True``)
               └── HostCommandTimeout  a command did not finish in time

Invariant: messages never contain key material, file contents or command input — only host names,
addresses, user names, paths, fingerprints, the (display-quoted) command and the tail of its stderr.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdforge.errors import EtcdforgeError


class HostError(EtcdforgeError):
    """Base of every host transport failure; ``host`` is the host's name in the cluster spec."""

    def __init__(self, message: str, *, host: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class HostUnreachable(HostError):
    """No connection could be made (or the connection was lost)."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(
            f"cannot reach host {host} at {address}: {reason}",
            host=host,
            hint="check the address and port in the spec, that sshd is running, and any firewall between",
        )
        self.address = address
        self.reason = reason


class HostRouteRefused(HostError):
    """The route check injected into :func:`etcdforge.hosts.ssh.connect` refused the address."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            f"refusing to connect to host {host} at {address}: the route check does not allow it", host=host
        )
        self.address = address


class HostKeyUnknown(HostError):
    """The host presented a key that known_hosts does not list for it."""

    def __init__(self, host: str, address: str, fingerprint: str, known_hosts: str) -> None:
        super().__init__(
            f"host key of {host} ({address}) is not in {known_hosts}; it presented {fingerprint}",
            host=host,
            hint="verify the fingerprint out of band, then accept it with --accept-new-host-keys",
        )
        self.address = address
        self.fingerprint = fingerprint
        self.known_hosts = known_hosts


class HostKeyChanged(HostError):
    """The host presented a key different from the one(s) recorded. Never accepted automatically."""

    def __init__(
        self,
        host: str,
        address: str,
        *,
        new_fingerprint: str,
        old_fingerprints: Sequence[str],
        known_hosts: str,
        lines: Sequence[int],
        revoked: bool = False,
    ) -> None:
        where = f"{known_hosts}:{','.join(str(n) for n in lines)}"
        if revoked:
            message = (
                f"REMOTE HOST KEY IS REVOKED for {host} ({address}): it presented {new_fingerprint}, "
                f"marked @revoked at {where}"
            )
            hint = "this host key must not be trusted; find out why before going on"
        else:
            message = (
                f"REMOTE HOST IDENTIFICATION HAS CHANGED for {host} ({address}): it presented "
                f"{new_fingerprint}, but {where} records {', '.join(old_fingerprints)}; someone could be "
                "eavesdropping on you (man-in-the-middle), or the host key has just been changed"
            )
            hint = (
                f"if the change is expected, remove the offending line(s) from {known_hosts} "
                "and connect again with --accept-new-host-keys"
            )
        super().__init__(message, host=host, hint=hint)
        self.address = address
        self.new_fingerprint = new_fingerprint
        self.old_fingerprints = tuple(old_fingerprints)
        self.known_hosts = known_hosts
        self.lines = tuple(lines)
        self.revoked = revoked


class HostAuthError(HostError):
    """Public-key authentication failed (key rejected, or the identity file cannot be used)."""

    def __init__(self, host: str, *, user: str, identity_file: str | None, reason: str = "") -> None:
        key = identity_file or "(no identity file)"
        detail = reason or "the server rejected the key"
        hint = (
            f"add the public key ({key}.pub) to ~{user}/.ssh/authorized_keys on {host}, "
            "or set the right user/identity file in the spec"
            if identity_file
            else "set ssh.identity_file in the spec (a private key without a passphrase)"
        )
        super().__init__(f"cannot log in to {host} as {user} with {key}: {detail}", host=host, hint=hint)
        self.user = user
        self.identity_file = identity_file


class SudoError(HostError):
    """``sudo -n`` failed for the login user (a password is required, or no sudo at all)."""

    def __init__(self, host: str, *, user: str, detail: str) -> None:
        super().__init__(
            f"user {user} cannot run sudo without a password on {host}: {detail}",
            host=host,
            hint=f"grant {user} passwordless sudo (NOPASSWD) on {host}, or log in as root",
        )
        self.user = user
        self.detail = detail


class HostCommandError(HostError):
    """A command failed. ``command`` is for display only (shell-quoted); ``stderr_tail`` its last lines."""

    def __init__(
        self, host: str, *, command: str, exit_status: int | None, stderr_tail: str, message: str = ""
    ) -> None:
        text = message or f"command failed on {host} with exit status {exit_status}: {command}"
        if stderr_tail:
            text += f"; stderr: {stderr_tail}"
        super().__init__(text, host=host)
        self.command = command
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail


class HostCommandTimeout(HostCommandError):
    """A command did not finish within its timeout (it was stopped)."""

    def __init__(self, host: str, *, command: str, timeout: float, stderr_tail: str = "") -> None:
        super().__init__(
            host,
            command=command,
            exit_status=None,
            stderr_tail=stderr_tail,
            message=f"command timed out on {host} after {timeout:g}s: {command}",
        )
        self.timeout = timeout
