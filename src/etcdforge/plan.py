"""Plans are data: an ordered tuple of steps, each with a stable id, the host it touches, an action and a
human reason. Planners build them purely; :mod:`etcdforge.execute` runs them; ``--dry-run`` prints them
and ``-o json`` emits :meth:`Plan.to_json`.

Actions are small frozen dataclasses (one per kind of change). File contents are carried as bytes but
never printed: a plan shows paths, sizes and reasons, and secrets (key files) are marked as such.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to ``path`` atomically with ``mode`` (skipped at run time if already equal)."""

    path: str
    content: bytes = field(repr=False)
    mode: int = 0o644
    secret: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "write-file",
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "size": len(self.content),
            "sha256": "(secret)" if self.secret else hashlib.sha256(self.content).hexdigest(),
        }


@dataclass(frozen=True)
class IssueCerts:
    """Create/renew certificates in the control machine's PKI (the CA key never leaves it)."""

    items: tuple[tuple[str, str], ...]  # (certificate name, reason)
    plan: Any = field(repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        return {"kind": "issue-certs", "certificates": [{"name": n, "reason": r} for n, r in self.items]}


@dataclass(frozen=True)
class InstallMemberPki:
    """Copy a member's own key pairs and the CA certificate (never the CA key) into its directory."""

    member: str
    files: tuple[tuple[str, str, int], ...]  # (source, destination, mode)

    def describe(self) -> dict[str, Any]:
        return {"kind": "install-member-pki", "member": self.member, "files": [d for _, d, _ in self.files]}


@dataclass(frozen=True)
class StartMember:
    member: str
    argv: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "start-member", "member": self.member, "argv": list(self.argv)}


@dataclass(frozen=True)
class StopMember:
    member: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "stop-member", "member": self.member}


@dataclass(frozen=True)
class WaitHealthy:
    members: tuple[str, ...]
    timeout: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "wait-healthy", "members": list(self.members), "timeout": self.timeout}


@dataclass(frozen=True)
class RemoveTree:
    path: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "remove-tree", "path": self.path}


Action = WriteFile | IssueCerts | InstallMemberPki | StartMember | StopMember | WaitHealthy | RemoveTree


@dataclass(frozen=True)
class Step:
    id: str
    host: str
    action: Action
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "reason": self.reason, **self.action.describe()}


Verb = Literal["up", "down", "destroy"]


@dataclass(frozen=True)
class Plan:
    verb: Verb
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    def to_json(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "changes": len(self.steps),
            "warnings": list(self.warnings),
            "steps": [s.to_json() for s in self.steps],
        }

    def lines(self) -> list[str]:
        """One human line per step: ``id  reason``."""
        return [f"{s.id:<28} {s.reason}" for s in self.steps]
