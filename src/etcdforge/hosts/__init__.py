"""The only code that touches a machine: :class:`Host` (the port), :class:`LocalHost`, and SSH.

``etcdforge.hosts.ssh`` (asyncssh) is imported on demand, not from here, so the CLI stays fast.
"""

from etcdforge.hosts.base import Host, RunResult, shell_join
from etcdforge.hosts.errors import (
    HostAuthError,
    HostCommandError,
    HostCommandTimeout,
    HostError,
    HostKeyChanged,
    HostKeyUnknown,
    HostRouteRefused,
    HostUnreachable,
    SudoError,
)
from etcdforge.hosts.local import LocalHost

__all__ = [
    "Host",
    "HostAuthError",
    "HostCommandError",
    "HostCommandTimeout",
    "HostError",
    "HostKeyChanged",
    "HostKeyUnknown",
    "HostRouteRefused",
    "HostUnreachable",
    "LocalHost",
    "RunResult",
    "SudoError",
    "shell_join",
]
