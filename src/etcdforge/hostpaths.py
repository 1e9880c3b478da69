"""Rules for every path the spec puts on a host (pure).

etcdforge runs commands as root on the hosts with these paths as arguments: it creates the data dir with
``install -d`` (which follows a symlink and changes an existing directory), hands its content to the etcd
user with ``find … -exec chown``, gives it to ``useradd --home-dir``, wipes ``member/`` in it on
``member remove``, writes binaries into the install dir and puts the binary path into a systemd unit.
A path that is not exactly what it looks like is therefore a way to take over a host. The spec accepts
only:

- **one canonical form**: absolute, no empty (``//``), ``.`` or ``..`` components, no trailing slash —
  refused, not silently normalised, so the spec says exactly what runs;
- **a safe character set** per component: letters, digits, ``.``, ``_``, ``-`` (no spaces, newlines,
  ``%``, ``$``, quotes, globs; a component never starts with ``-`` or ``.``);
- **allowed parents**: the data dir must sit below ``/var/lib``, ``/var/opt``, ``/srv``, ``/opt``,
  ``/mnt`` or a top-level ``/data…`` directory, and the install dir below ``/usr/local`` or ``/opt``;
  nothing in a system tree (``/etc``, ``/usr``, ``/bin``, ``/home``, ``/root``, ``/tmp``, …).

What a string cannot show (a symlink planted on the host, a world-writable parent, a populated directory
that belongs to someone else) is observed on the host and judged by :func:`host_path_problems` before
anything changes anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_PATH = 255
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")

#: trees no path of ours may be in or be (an allowed parent never is one, but the message is clearer)
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found",
    "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var/tmp", "/var/run", "/var/lock",
    "/var/log", "/var/cache", "/var/spool", "/var/mail",
)  # fmt: skip
#: where a data dir may live (one level below at least): /var/lib/etcd, /srv/etcd, /data1/etcd …
DATA_PARENTS = ("/var/lib", "/var/opt", "/srv", "/opt", "/mnt")
_DATA_TOP = re.compile(r"/data[A-Za-z0-9_-]*")
#: where uploaded or downloaded binaries may go
INSTALL_PARENTS = ("/usr/local", "/opt")
#: entries a data dir may hold before etcd owns it: etcd's own data, and a file system's lost+found
ETCD_DATA_ENTRIES = frozenset({"member", "lost+found"})


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def canonical(value: str) -> str:
    """``value`` if it is an absolute path in canonical form with safe characters; ValueError otherwise."""
    if not value.startswith("/"):
        raise ValueError(f"{value!r}: use an absolute path, e.g. /var/lib/etcd")
    if len(value) > MAX_PATH:
        raise ValueError(f"{value[:40]!r}…: longer than {MAX_PATH} characters")
    parts = value.split("/")[1:]
    if ".." in parts:
        raise ValueError(f"{value!r}: '..' is not allowed in a path")
    if "" in parts or "." in parts:
        fixed = "/" + "/".join(p for p in parts if p not in ("", "."))
        raise ValueError(f"{value!r} is not in canonical form; write it as {fixed!r}")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise ValueError(
                f"{value!r}: {part!r} is not allowed; path components use only letters, digits, '.', '_' "
                "and '-' and start with a letter, digit or '_' (no spaces, newlines, '%', '$' or quotes)"
            )
    return value


def _system_tree(path: str) -> str | None:
    return next((t for t in SYSTEM_TREES if _within(path, t)), None)


def check_data_dir(value: str) -> str:
    """The data dir: canonical, dedicated, below an allowed parent."""
    path = canonical(value)
    tree = _system_tree(path)
    if tree is not None:
        raise ValueError(
            f"{path!r} is in the system tree {tree}; give etcd a directory of its own, e.g. /var/lib/etcd"
        )
    top = "/" + path.split("/")[1]
    below_allowed = any(path.startswith(p + "/") for p in DATA_PARENTS) or (
        _DATA_TOP.fullmatch(top) is not None and path != top
    )
    if not below_allowed:
        raise ValueError(
            f"{path!r}: the data dir must be a directory of its own below /var/lib, /var/opt, /srv, /opt, "
            "/mnt or /data…, e.g. /var/lib/etcd or /srv/etcd"
        )
    return path


def check_install_dir(value: str) -> str:
    """Where uploaded/downloaded binaries go: canonical, below /usr/local or /opt."""
    path = canonical(value)
    if not any(path.startswith(p + "/") for p in INSTALL_PARENTS):
        raise ValueError(
            f"{path!r}: binaries are installed below /usr/local or /opt (e.g. /usr/local/bin), never into "
            "a directory a package manager or a user owns"
        )
    return path


def check_host_binary(value: str) -> str:
    """An etcd binary already on the hosts (``source: system``): canonical and outside writable trees."""
    path = canonical(value)
    for tree in ("/tmp", "/var/tmp", "/home", "/dev", "/proc", "/sys", "/run"):
        if _within(path, tree):
            raise ValueError(f"{path!r} is in {tree}, where a binary run as root must not come from")
    return path


def nested(a: str, b: str) -> bool:
    """True if one of two canonical paths is the other or lies inside it."""
    return _within(a, b) or _within(b, a)


# ----------------------------------------------------------------------------------------------------
# What the host says about a path (observed by a fixed script, see remote_observe.GUARD_SCRIPT)


def _fields(rest: str) -> tuple[str, str, str]:
    a, b, c = [*rest.split(" "), "?", "?"][:3]
    return a, b, c


def host_path_problems(path: str, facts: Sequence[str]) -> tuple[str, ...]:
    """Judge the observed facts about ``path`` on a host; each problem is one sentence.

    Fact lines: ``link TARGET`` (the path is a symlink), ``notdir`` (exists, not a directory),
    ``parent DIR MODE UID`` (an existing ancestor that is world-writable or not owned by root, so
    somebody else could swap what lies below it). ``foreign …`` facts are judged by :func:`foreign_data`.
    """
    out: list[str] = []
    for line in facts:
        kind, _, rest = line.partition(" ")
        if kind == "link":
            out.append(f"{path} is a symlink (to {rest or '?'}); give a real directory")
        elif kind == "notdir":
            out.append(f"{path} exists and is not a directory")
        elif kind == "parent":
            parent, mode, uid = _fields(rest)
            why = "world-writable" if mode[-1:] in ("2", "3", "6", "7") else f"owned by uid {uid}, not root"
            out.append(f"{path} is below {parent} ({mode}), which is {why}: anybody who can write there "
                       "can swap the directory for a symlink")  # fmt: skip
    return tuple(out)


def binary_problems(facts: Sequence[str]) -> tuple[str, ...]:
    """Judge the facts about the etcd binary the observation would run as root (``--version``):
    ``parent DIR MODE UID`` as above, ``file PATH MODE UID`` (the binary itself is writable by others or
    not root's)."""
    out: list[str] = []
    for line in facts:
        kind, _, rest = line.partition(" ")
        if kind == "parent":
            parent, mode, uid = _fields(rest)
            out.append(f"{parent} ({mode}, uid {uid}) is writable by somebody other than root")
        elif kind == "file":
            path, mode, uid = _fields(rest)
            out.append(f"{path} is mode {mode}, uid {uid}: it must be root's and writable only by root")
    return tuple(out)


def foreign_data(path: str, facts: Sequence[str]) -> str | None:
    """``foreign OWNER ENTRY…``: a populated directory etcd does not own, holding more than etcd data.

    An etcd data dir written by a root-run etcd (a hand-built cluster) holds only ``member/`` and is
    taken over; anything else is somebody's data that ``chown`` would give away.
    """
    for line in facts:
        kind, _, rest = line.partition(" ")
        if kind == "foreign":
            owner, _, entries = rest.partition(" ")
            names = entries.split("/") if entries else []
            if not set(names) <= ETCD_DATA_ENTRIES:
                shown = ", ".join(sorted(set(names) - ETCD_DATA_ENTRIES)[:5])
                return (
                    f"{path} is owned by {owner} and holds files that are not etcd data ({shown}); "
                    "etcdforge would hand them to the etcd user"
                )
    return None
