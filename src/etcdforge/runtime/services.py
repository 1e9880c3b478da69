"""The service-manager port: how a member's etcd is started, stopped and watched.

Two implementations: :class:`~etcdforge.runtime.processes.ProcessServices` (local mode: supervised
processes in the workspace) and :class:`~etcdforge.runtime.units.SystemdServices` (hosts mode: the etcd
unit on each member's host). Actions, planners and steps are the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from etcdforge.errors import MemberStartError


class ServiceManager(Protocol):
    #: seconds between health polls (a poll costs more on hosts than here)
    poll_interval: float
    #: per-call timeout of a health poll
    health_call_timeout: float

    async def start(self, members: Sequence[str]) -> str:
        """Start the members not running yet, without waiting for them to become ready."""
        ...

    async def stop(self, member: str) -> str:
        """Stop the member and keep it stopped (no restart on failure or boot)."""
        ...

    async def restart(
        self, member: str, *, before_start: Sequence[Sequence[str]] = (), timeout: float
    ) -> None:
        """Stop, run ``before_start`` (argv lists, on the member's host), start; raise
        :class:`MemberStartError` when it does not come back."""
        ...

    async def switch_binary(self, member: str, binary: str | None, *, timeout: float) -> str:
        """Stop the member, make it run ``binary`` from now on (keeping the one it ran as its previous),
        start it; ``binary`` None: back to the previous one. A member already running ``binary`` is left
        alone. Raise :class:`MemberStartError` when it does not come back."""
        ...

    async def wipe_data(self, member: str) -> str:
        """Delete the member's etcd data (it is stopped)."""
        ...

    async def failed(self, members: Sequence[str], polls: int) -> dict[str, MemberStartError]:
        """Among ``members`` (being waited for), those whose etcd failed to start; ``polls`` is how many
        health polls came before (a manager whose check costs a round trip need not look every time)."""
        ...

    async def alive(self, member: str) -> None:
        """Raise :class:`MemberStartError` if the member's etcd is not running (or keeps failing)."""
        ...

    async def failure(self, member: str, message: str) -> MemberStartError:
        """``message`` as an error about ``member``, with its log tail and where the full log is."""
        ...

    async def stop_started(self) -> None:
        """Stop what this run started (a failed first start with no quorum leaves nothing running)."""
        ...
