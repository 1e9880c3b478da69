"""The one exception tree of etcdforge.

Every *expected* failure raises a subclass of :class:`EtcdforgeError`; the CLI prints its message as
one line and exits non-zero. Anything else is a bug and shows a traceback (behind ``--debug``).

::

    EtcdforgeError
     ├── SpecError              cluster.yaml is missing, malformed or invalid (carries field paths)
     ├── WorkspaceError         the workspace directory is in a state we cannot work with
     ├── PkiError               certificates/keys cannot be read, issued or trusted
     │    └── CfsslConfigError  a cfssl ca-config.json / CSR JSON is invalid
     ├── BinaryError            no usable etcd/etcdctl binary (or a refused version)
     ├── EtcdError              talking to etcd failed
     │    ├── EtcdUnavailable   the endpoint cannot be reached (refused, timed out, no leader)
     │    │    └── EtcdServerUnavailable  (etcdforge.etcd.failures) etcd says it cannot serve now
     │    ├── EtcdTLSError      the TLS handshake failed; the message says why (unknown CA, SAN, …)
     │    └── EtcdRequestError  etcd answered with an error (carries the gRPC code and etcd's text)
     │         └── EtcdServerError  (etcdforge.etcd.failures) a typed etcd server error (reason)
     ├── MemberStartError       a member failed to start (carries its log or journal tail)
     ├── HostError              (etcdforge.hosts.errors) a host cannot be reached or used
     │    ├── HostUnreachable   no connection (refused, timed out, no route)
     │    ├── HostRouteRefused  the address is outside loopback and the test hosts' network (tests)
     │    ├── HostKeyUnknown    the host key is not in known_hosts (--accept-new-host-keys records it)
     │    ├── HostKeyChanged    the host key differs from known_hosts: refused, always
     │    ├── HostAuthError     the SSH user or key was refused
     │    ├── SudoError         `sudo -n` does not work for the SSH user
     │    └── HostCommandError  a command failed on the host (argv, exit code, stderr)
     │         └── HostCommandTimeout
     ├── BackupError            a backup cannot be taken, stored, found, verified or restored (exit 4)
     ├── MaintenanceError       defrag, compaction, alarms: etcd did not end up as asked
     ├── PlanError              a plan cannot be made safely (quorum, pending change, …)
     └── StepError              a plan step failed while executing (names the step and what to do)

Messages are written for the user: what is wrong, where, and what to do next.
"""

from __future__ import annotations


class EtcdforgeError(Exception):
    """Base of every expected etcdforge failure."""

    #: process exit code the CLI uses for this error
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class SpecError(EtcdforgeError):
    """The cluster spec is invalid. ``problems`` holds one ``path: message`` line per problem."""

    exit_code = 2

    def __init__(self, message: str, *, problems: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        return f"{self.message}: " + "; ".join(self.problems)


class WorkspaceError(EtcdforgeError):
    """The workspace directory cannot be used as asked."""


class PkiError(EtcdforgeError):
    """A certificate or key cannot be read, issued or trusted."""


class CfsslConfigError(PkiError):
    """A cfssl JSON file (ca-config.json or a CSR) is invalid."""


class BinaryError(EtcdforgeError):
    """No usable etcd binary, or a version we refuse."""


class EtcdError(EtcdforgeError):
    """Talking to etcd failed. ``endpoint`` names the member endpoint when known."""

    def __init__(self, message: str, *, endpoint: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.endpoint = endpoint


class EtcdUnavailable(EtcdError):
    """The endpoint could not be reached or could not serve (connection refused, timeout, no leader)."""


class EtcdTLSError(EtcdError):
    """The TLS handshake failed; the message names the cause."""


class EtcdRequestError(EtcdError):
    """etcd answered with an error status."""

    def __init__(
        self, message: str, *, code: str, endpoint: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.code = code


class MemberStartError(EtcdforgeError):
    """A member did not start or did not become healthy. ``log_tail`` holds its last log lines;
    ``healthy`` the members that were healthy when the wait gave up (a degraded cluster still runs)."""

    def __init__(
        self,
        message: str,
        *,
        member: str,
        log_tail: str = "",
        hint: str | None = None,
        healthy: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.member = member
        self.log_tail = log_tail
        self.healthy = healthy


class BackupError(EtcdforgeError):
    """A backup cannot be taken, stored, found, verified or restored (the message names which and why)."""

    exit_code = 4


class MaintenanceError(EtcdforgeError):
    """A maintenance step ran but etcd did not end up as asked (an alarm raised again, a write probe
    that does not read back)."""


class PlanError(EtcdforgeError):
    """A plan cannot be made without breaking a safety rule."""


class StepError(EtcdforgeError):
    """A plan step failed while executing: ``step_id`` and ``host`` say where; the cause's message,
    hint and exit code are kept (the cause itself is ``__cause__``)."""

    def __init__(
        self,
        message: str,
        *,
        step_id: str,
        hint: str | None = None,
        host: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(f"{step_id}: {message}", hint=hint)
        self.step_id = step_id
        self.host = host
        if exit_code is not None:
            self.exit_code = exit_code

    @classmethod
    def wrap(cls, cause: EtcdforgeError, *, step_id: str, host: str | None) -> StepError:
        return cls(cause.message, step_id=step_id, hint=cause.hint, host=host, exit_code=cause.exit_code)
