"""The etcd version graph, as data: which upgrades and downgrades etcdforge performs, and why (pure).

Each rule carries its source (see ``shared/docs/etcd-facts.md`` §4 and §6):

* one minor at a time — 3.4 → 3.5 → 3.6; skipping a minor "will likely fail" (etcd.io upgrade guides);
* before leaving a minor, a minimum patch of it: 3.4.22 (the production minimum of etcd's CHANGELOG,
  and the upgrade guide's "move to the latest patch first"), 3.5.26 (3.5 → 3.6: learner-promotion
  persistence 3.5.20, membership in snapshots 3.5.24, zombie members 3.5.26 — etcd.io blog 2025);
* known-bad releases refused as targets for production: 3.5.0–3.5.2 (data inconsistency after a crash,
  etcd's v3.5 postmortem), and below the production minimum (3.4.22+ / 3.5.6+);
* downgrades only where etcd supports them: 3.6 → 3.5 through 3.6's downgrade API; 3.5 → 3.4 only onto
  3.4.32+ started with ``--next-cluster-version-compatible``; a patch downgrade within a minor is the
  same on-disk format (allowed with ``--downgrade``).
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, int, int]

#: the patch a member must run before moving to the next minor, with the reason
MIN_PATCH_BEFORE_NEXT_MINOR: dict[tuple[int, int], tuple[Version, str]] = {
    (3, 4): ((3, 4, 22), "the production minimum of 3.4 (etcd CHANGELOG); upgrade guide: latest patch first"),
    (3, 5): (
        (3, 5, 26),
        "3.5 → 3.6 needs 3.5.26+ (too-many-learners 3.5.20, snapshots 3.5.24, zombie members 3.5.26)",
    ),
}
#: releases never to run in production, with the reason
KNOWN_BAD: tuple[tuple[Version, Version, str], ...] = (
    ((3, 5, 0), (3, 5, 2), "3.5.0–3.5.2 can lose committed writes after a crash (etcd's v3.5 postmortem)"),
    ((3, 4, 0), (3, 4, 21), "below the production minimum 3.4.22 (etcd CHANGELOG)"),
    ((3, 5, 3), (3, 5, 5), "below the production minimum 3.5.6 (defrag crash, auth + new member bugs)"),
)
#: config-file settings a release no longer has: etcdforge leaves them out of a config for it (3.6 removed
#: --enable-v2, --experimental-enable-v2v3 and the v2 proxy flags: etcd's upgrade_3_6 guide)
REMOVED_SETTINGS: dict[tuple[int, int], frozenset[str]] = {
    (3, 6): frozenset({"enable-v2", "experimental-enable-v2v3", "proxy", "proxy-failure-wait",
                       "proxy-refresh-interval", "proxy-dial-timeout", "proxy-write-timeout",
                       "proxy-read-timeout"}),
}  # fmt: skip


def removed_settings(version: Version) -> frozenset[str]:
    """Settings etcd ``version`` no longer accepts."""
    out: frozenset[str] = frozenset()
    for since, names in REMOVED_SETTINGS.items():
        if version[:2] >= since:
            out |= names
    return out


#: the newest minor etcdforge knows how to upgrade to
NEWEST_MINOR = (3, 6)


def parse(text: str) -> Version:
    parts = text.strip().lstrip("v").split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not an etcd version like 3.5.17")
    return int(parts[0]), int(parts[1]), int(parts[2])


def show(v: Version) -> str:
    return ".".join(map(str, v))


def bad_reason(v: Version) -> str | None:
    return next((why for lo, hi, why in KNOWN_BAD if lo <= v <= hi), None)


@dataclass(frozen=True)
class Path:
    """A verdict on moving a cluster from ``current`` to ``target``: ``refused`` says why not (one line,
    with what to do), else ``kind`` is "none", "patch", "minor" or "downgrade"; ``warnings`` go to the
    user."""

    current: Version
    target: Version
    kind: str = "none"
    refused: str | None = None
    warnings: tuple[str, ...] = ()


def check_path(
    current: Version,
    target: Version,
    *,
    production: bool,
    allow_unsafe: bool = False,
    downgrade: bool = False,
) -> Path:
    """May a cluster whose members all run ``current`` move to ``target``? (Mixed clusters are judged from
    their lowest version, and the members already at ``target`` are simply skipped.)"""
    warnings: list[str] = []
    bad = bad_reason(target)
    if bad:
        if production and not allow_unsafe:
            return Path(current, target, refused=f"etcd {show(target)} is refused: {bad}")
        warnings.append(f"etcd {show(target)}: {bad} — fine for development and tests only")
    if target == current:
        return Path(current, target, "none", warnings=tuple(warnings))
    if target[0] != 3 or current[0] != 3:
        return Path(current, target, refused="etcdforge upgrades etcd 3.x only")
    if target[:2] > NEWEST_MINOR:
        return Path(
            current, target, refused=f"etcd {show(target)} is newer than the releases etcdforge knows"
        )
    if target < current:
        if not downgrade:
            return Path(
                current, target,
                refused=f"{show(target)} is older than the running {show(current)}: a downgrade "
                "(pass --downgrade where etcd supports it)",
            )  # fmt: skip
        if target[:2] == current[:2]:
            return Path(current, target, "downgrade", warnings=tuple(warnings))
        if current[:2] == (3, 6) and target[:2] == (3, 5):
            return Path(
                current, target,
                refused="3.6 → 3.5 goes through etcd 3.6's downgrade API (downgrade validate/enable, "
                "wait for the storage version, then the binaries): not built into etcdforge yet",
            )  # fmt: skip
        if current[:2] == (3, 5) and target[:2] == (3, 4):
            return Path(
                current, target,
                refused="3.5 → 3.4 is supported by etcd only onto 3.4.32+ started with "
                "--next-cluster-version-compatible, without auth: restore a 3.4 backup instead",
            )  # fmt: skip
        return Path(
            current,
            target,
            refused=f"etcd does not support a downgrade from {show(current)} to {show(target)}",
        )
    if target[:2] == current[:2]:
        return Path(current, target, "patch", warnings=tuple(warnings))
    if (target[0], target[1] - 1) != current[:2]:
        step = f"{current[0]}.{current[1] + 1}"
        return Path(
            current, target,
            refused=f"one minor at a time: upgrade {show(current)} to the latest {step}.x first, "
            f"then to {show(target)}",
        )  # fmt: skip
    floor = MIN_PATCH_BEFORE_NEXT_MINOR.get(current[:2])
    if floor is not None and current < floor[0]:
        return Path(
            current, target,
            refused=f"upgrade to {show(floor[0])} or a later {current[0]}.{current[1]}.x first: {floor[1]}",
        )  # fmt: skip
    return Path(current, target, "minor", warnings=tuple(warnings))
