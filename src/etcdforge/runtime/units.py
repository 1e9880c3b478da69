"""Hosts mode's service manager: the etcd systemd unit on each member's host.

Every call is one session on one host; checks that cost a round trip per host (the unit's state) are
made every few health polls, not on each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from etcdforge import layout
from etcdforge.errors import BinaryError, MemberStartError
from etcdforge.hosts.base import CommandOp, Host
from etcdforge.hosts.errors import HostCommandError
from etcdforge.hosts.systemd import parse_systemctl_show
from etcdforge.spec import ClusterSpec

JOURNAL_LINES = 30
#: a unit check costs a session per host: every UNIT_CHECK_EVERY-th health poll is soon enough
UNIT_CHECK_EVERY = 5


class SystemdServices:
    """Implements :class:`~etcdforge.runtime.services.ServiceManager` with systemd over the host port."""

    poll_interval = 0.1
    health_call_timeout = 1.0

    def __init__(self, spec: ClusterSpec, hosts: Mapping[str, Host]) -> None:
        self.spec = spec
        self.hosts = hosts

    async def start(self, members: Sequence[str]) -> str:
        # --no-block: a new member reports READY only once a quorum runs, so members start together.
        # (start also clears a failed state; one session per host.)
        await asyncio.gather(
            *(self.hosts[m].run(["systemctl", "start", "--no-block", layout.UNIT_NAME]) for m in members)
        )
        return f"started {', '.join(members)}"

    async def stop(self, member: str) -> str:
        # disabled too, so a failing unit does not restart in a loop, nor come back at boot
        await self.hosts[member].run(["systemctl", "disable", "--now", "--quiet", layout.UNIT_NAME])
        return "stopped and disabled"

    async def restart(
        self, member: str, *, before_start: Sequence[Sequence[str]] = (), timeout: float
    ) -> None:
        host = self.hosts[member]
        # a blocking restart of a Type=notify unit returns once the member is ready again (quorum holds)
        if before_start:
            # stop, the commands, start: one batch (one session), stopping at the first failure
            ops = [
                CommandOp(("systemctl", "stop", layout.UNIT_NAME)),
                *(CommandOp(tuple(argv)) for argv in before_start),
                CommandOp(("systemctl", "start", layout.UNIT_NAME)),
            ]
            try:
                await host.apply_batch(ops, timeout=timeout)
                ok = True
            except HostCommandError:
                ok = False
        else:
            result = await host.run(["systemctl", "restart", layout.UNIT_NAME], check=False, timeout=timeout)
            ok = result.ok
        if not ok:
            raise await self.failure(member, f"restarting etcd on {member} failed")

    async def switch_binary(self, member: str, binary: str | None, *, timeout: float) -> str:
        """``binary``: where an earlier step staged the new etcd on the host; it replaces the installed one
        (kept as ``etcd.previous``) while the unit is stopped — one session. None: the previous back."""
        dest = f"{self.spec.etcd.install_dir.rstrip('/')}/etcd"
        previous = f"{dest}.previous"
        host = self.hosts[member]
        stop, start = (
            CommandOp(("systemctl", "stop", layout.UNIT_NAME)),
            CommandOp(("systemctl", "start", layout.UNIT_NAME)),
        )
        if binary is None:
            ops = [stop, CommandOp(("mv", "-f", "--", previous, dest)), start]
        else:
            sums = await host.sha256([dest, binary])
            if sums.get(dest) is not None and sums.get(dest) == sums.get(binary):
                ops = [start]  # swapped already (an interrupted run): it only has to run
            elif sums.get(binary) is None:
                raise BinaryError(
                    f"the new etcd is not staged at {binary} on {member}", hint="run the upgrade again"
                )
            else:
                ops = [
                    stop,
                    CommandOp(("cp", "-p", "--", dest, previous)),
                    CommandOp(("install", "-m", "0755", "-o", "root", "-g", "root", "--", binary, dest)),
                    start,
                ]
        try:
            await host.apply_batch(ops, timeout=timeout)
        except HostCommandError as exc:
            raise await self.failure(member, f"switching etcd's binary on {member} failed: {exc}") from None
        return f"runs {dest} ({'previous' if binary is None else 'new'})"

    async def wipe_data(self, member: str) -> str:
        data = layout.data_dir(self.spec).rstrip("/")
        await self.hosts[member].run(["rm", "-rf", "--one-file-system", "--", f"{data}/member"])
        return f"removed {data}/member"

    async def _failed_units(self, members: Sequence[str]) -> tuple[str, ...]:
        """Members whose unit failed or keeps restarting (among the hosts this run is connected to)."""

        async def state(member: str) -> tuple[str, dict[str, str]]:
            argv = ["systemctl", "show", layout.UNIT_NAME, "-p", "ActiveState", "-p", "SubState"]
            result = await self.hosts[member].run([*argv, "-p", "NRestarts"], check=False)
            return member, parse_systemctl_show(result.stdout.decode(errors="replace"))

        out = []
        for member, unit in await asyncio.gather(*(state(m) for m in members if m in self.hosts)):
            # Restart=on-failure keeps a crashing etcd in "activating (auto-restart)", never "failed"
            restarts = unit.get("NRestarts", "0")
            if (
                unit.get("ActiveState") == "failed"
                or unit.get("SubState") == "auto-restart"
                or (restarts.isdigit() and int(restarts) > 0)
            ):
                out.append(member)
        return tuple(out)

    async def failed(self, members: Sequence[str], polls: int) -> dict[str, MemberStartError]:
        if polls == 0 or polls % UNIT_CHECK_EVERY:
            return {}
        return {
            m: await self.failure(m, f"etcd on {m} failed to start (systemd unit failed)")
            for m in await self._failed_units(members)
        }

    async def alive(self, member: str) -> None:
        if await self._failed_units((member,)):
            raise await self.failure(member, f"etcd on {member} keeps failing")

    async def failure(self, member: str, message: str) -> MemberStartError:
        return MemberStartError(
            message,
            member=member,
            log_tail=await self._journal(member),
            hint=f"journalctl -u {layout.UNIT_NAME} on {member}",
        )

    async def _journal(self, member: str) -> str:
        if member not in self.hosts:
            return ""  # a host this run could not reach (removing a dead member)
        argv = ["journalctl", "-u", layout.UNIT_NAME, "-n", str(JOURNAL_LINES), "--no-pager", "-o", "cat"]
        result = await self.hosts[member].run(argv, check=False)
        return result.stdout.decode(errors="replace").strip()

    async def stop_started(self) -> None:
        return None  # units are left to systemd: `apply` reports and a re-run converges
