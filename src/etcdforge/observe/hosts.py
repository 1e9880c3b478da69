"""Observe real hosts (read only): managed files, unit state, data dir, binary — and the cluster itself.

Each fact is a command plus a pure parser; the parsers are unit-tested on recorded output. All hosts are
observed concurrently, and on one host the independent commands run concurrently over one connection.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from etcdforge import layout
from etcdforge.hosts.base import Host
from etcdforge.hosts.systemd import parse_systemctl_show

#: non-secret managed files whose content is read so the plan can show a diff
TEXT_FILES = (layout.CONFIG, layout.UNIT)


@dataclass(frozen=True)
class FileState:
    sha256: str
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class HostObserved:
    member: str
    etcd_user: bool
    files: Mapping[str, FileState | None]
    dirs: Mapping[str, tuple[int, str, str] | None]
    texts: Mapping[str, bytes | None]
    active_state: str  # systemd ActiveState: active, inactive, failed, activating, …
    unit_file_state: str  # enabled, disabled, "" (no unit)
    has_data: bool
    binary_sha256: str | None
    binary_version: str | None
    #: TCP listeners on the host: (address, port, process name)
    listeners: tuple[tuple[str, int, str], ...] = ()
    #: the unit file systemd runs etcd from ("" if none), e.g. a hand-written /usr/lib/systemd/system one
    unit_path: str = ""
    #: the argv the running etcd was started with (None: not running, or not readable)
    main_argv: tuple[str, ...] | None = None
    #: something in the data dir is not owned by the etcd user (a hand-built cluster ran etcd as root)
    data_foreign_owned: bool = False
    #: files matching the "must not be on a member" patterns: path -> sha256
    strays: Mapping[str, str] = field(default_factory=dict)
    #: facts about each guarded directory (data dir, install dir, our config dirs): path -> fact lines,
    #: judged by :func:`etcdforge.hostpaths.host_path_problems` and :func:`~etcdforge.hostpaths.foreign_data`
    guards: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: why the etcd binary was not run as root (a writable directory above it, not root's): fact lines
    binary_guard: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "activating", "reloading")


def parse_listeners(output: str) -> tuple[tuple[str, int, str], ...]:
    """``ss -ltnpH`` lines -> (local address, port, process name or "?")."""
    out = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        if not port.isdigit():
            continue
        process = "?"
        rest = " ".join(fields[5:])
        if '(("' in rest:
            process = rest.split('(("', 1)[1].split('"', 1)[0]
        out.append((address.strip("[]"), int(port), process))
    return tuple(out)


def parse_cmdline(encoded: str) -> tuple[str, ...] | None:
    """The base64 of ``/proc/PID/cmdline`` (NUL-separated) -> argv; ``-`` or empty -> None."""
    if encoded in ("", "-"):
        return None
    raw = base64.b64decode(encoded)
    if not raw:
        return None
    return tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def parse_strays(lines: Sequence[str]) -> dict[str, str]:
    """``@strays`` lines (``SHA256 PUB PATH``, PUB ``pub:SHA256`` of the public key or ``-``) ->
    {path: its ids, space-separated} (see ``deploy.ca_key_ids``)."""
    out: dict[str, str] = {}
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[2]:
            digest, pub, path = parts
            out[path] = digest if pub == "-" else f"{digest} {pub}"
    return out


def parse_etcd_version(output: str) -> str | None:
    for line in output.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return None


# One session per host for the whole observation (a session costs a login on the host). Arguments:
# $1 data dir, $2 etcd binary, $3 etcd user, $4 unit, $5 count N of text files, $6 "hash" to hash the
# binary (only needed when etcdforge installs it: ~20 MB of CPU work per host), $7 count G of stray
# patterns, $8 count D of guarded directories, then the N text files, then the G patterns (shell globs,
# expanded here), then the D directories (judged by hostpaths.host_path_problems), then every managed
# path (files and directories). Output: "@section" lines, each followed by its data.
# The binary is run (--version, as root) only when it and every directory above it are root's and
# writable by nobody else.
OBSERVE_SCRIPT = """\
data=$1 bin=$2 user=$3 unit=$4 ntext=$5 hashbin=$6 nglob=$7 nguard=$8
shift 8
unsafe_mode() { case $1 in *[2367]|*[2367]?) return 0;; esac; return 1; }
guard_parents() {
  d=$1
  while [ "$d" != / ] && [ -n "$d" ]; do
    d=$(dirname -- "$d")
    [ -e "$d" ] || continue
    st=$(stat -L -c '%a %u' -- "$d" 2>/dev/null) || { echo "parent $d ? ?"; continue; }
    case ${st% *} in *[2367]) echo "parent $d $st"; continue;; esac
    [ "${st#* }" = 0 ] || echo "parent $d $st"
  done
}
guard_dir() {
  if [ -L "$1" ]; then
    echo "link $(readlink -- "$1" | head -n 1 | tr -cd '[:print:]')"
  elif [ -e "$1" ] && [ ! -d "$1" ]; then
    echo notdir
  fi
  guard_parents "$1"
  r=$(realpath -m -- "$1" 2>/dev/null) && [ "$r" != "$1" ] && guard_parents "$r"
  if [ "$1" = "$data" ] && [ -d "$1" ] && [ ! -L "$1" ]; then
    o=$(stat -c %U -- "$1")
    if [ "$o" != "$user" ]; then
      e=$(find "$1" -mindepth 1 -maxdepth 1 -printf '%f/' 2>/dev/null | head -c 300 |
        tr -c 'A-Za-z0-9._+/-' '?')
      [ -n "$e" ] && echo "foreign $o ${e%/}"
    fi
  fi
}
guard_bin() {
  guard_parents "$1"
  rb=$(realpath -e -- "$1" 2>/dev/null) || return 0
  [ "$rb" = "$1" ] || guard_parents "$rb"
  st=$(stat -c '%a %u' -- "$rb")
  if unsafe_mode "${st% *}" || [ "${st#* }" != 0 ]; then echo "file $rb $st"; fi
}
echo @user
if id -u "$user" >/dev/null 2>&1; then echo yes; else echo no; fi
echo @data
if [ -d "$data/member" ]; then echo yes; else echo no; fi
echo @binguard
bad=$(guard_bin "$bin")
[ -n "$bad" ] && printf '%s\\n' "$bad"
echo @version
[ -z "$bad" ] && "$bin" --version 2>/dev/null | head -n 1
echo @binsha
if [ "$hashbin" = hash ] && [ -f "$bin" ]; then h=$(sha256sum < "$bin"); echo "${h%% *}"; else echo -; fi
echo @unit
systemctl show "$unit" -p ActiveState -p UnitFileState -p LoadState -p FragmentPath -p MainPID 2>/dev/null
echo @cmdline
pid=$(systemctl show "$unit" -p MainPID --value 2>/dev/null)
if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r "/proc/$pid/cmdline" ]; then
  base64 -w 0 < "/proc/$pid/cmdline"; echo
else
  echo -
fi
echo @dataowner
if [ -d "$data" ]; then
  r=$(find "$data" -xdev \\( ! -user "$user" -o ! -group "$user" \\) -print -quit 2>/dev/null) || r='?'
  if [ -n "$r" ]; then echo foreign; else echo ok; fi
else
  echo ok
fi
echo @ss
ss -ltnpH 2>/dev/null
i=0
while [ "$i" -lt "$ntext" ]; do
  echo "@text $1"
  if [ -f "$1" ]; then base64 -w 0 < "$1"; echo; else echo -; fi
  shift
  i=$((i + 1))
done
echo @strays
i=0
while [ "$i" -lt "$nglob" ]; do
  for f in $1; do
    if [ -f "$f" ]; then
      h=$(sha256sum < "$f"); p=-
      if command -v openssl >/dev/null 2>&1 &&
        openssl pkey -in "$f" -pubout -outform DER -out /dev/null 2>/dev/null; then
        p=$(openssl pkey -in "$f" -pubout -outform DER 2>/dev/null | sha256sum); p="pub:${p%% *}"
      fi
      printf '%s %s %s\\n' "${h%% *}" "$p" "$f"
    fi
  done
  shift
  i=$((i + 1))
done
i=0
while [ "$i" -lt "$nguard" ]; do
  echo "@guard $1"
  guard_dir "$1"
  shift
  i=$((i + 1))
done
echo @files
for p do
  if [ -e "$p" ]; then
    st=$(stat -c '%a %U %G' -- "$p")
    if [ -f "$p" ]; then h=$(sha256sum < "$p"); h=${h%% *}; else h=-; fi
    printf '%s %s %s\\n' "$h" "$st" "$p"
  else
    printf 'missing - - - %s\\n' "$p"
  fi
done
echo @end
"""


def parse_observation(output: str) -> dict[str, list[str]]:
    """Split the observe script's output into sections (``text PATH`` sections keep their path)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@"):
            current = sections.setdefault(line[1:], [])
        elif current is not None:
            current.append(line)
    if "end" not in sections:
        raise ValueError("the observation was cut short (no @end)")
    return sections


def parse_files(lines: list[str]) -> dict[str, tuple[str, int, str, str] | None]:
    """``@files`` lines -> {path: (sha256 or "-" for a directory, mode, owner, group) or None}."""
    out: dict[str, tuple[str, int, str, str] | None] = {}
    for line in lines:
        digest, mode, owner, rest = line.split(" ", 3)
        group, _, path = rest.partition(" ")
        out[path] = None if digest == "missing" else (digest, int(mode, 8), owner, group)
    return out


async def observe_host(
    host: Host,
    member: str,
    paths: Sequence[str],
    *,
    dirs: Sequence[str],
    data_dir: str,
    binary: str,
    hash_binary: bool = True,
    stray_patterns: Sequence[str] = (),
    guards: Sequence[str] = (),
) -> HostObserved:
    """Everything ``plan`` needs to know about one host, in ONE command (one SSH session).

    ``stray_patterns`` are shell globs of files that must not be on a member (see
    :data:`etcdforge.layout.STRAY_PATTERNS`); the ones found are reported with their sha256. ``guards`` are
    directories checked for symlinks, unsafe parents and (the data dir) somebody else's files.
    """
    result = await host.run(
        [
            "sh",
            "-c",
            OBSERVE_SCRIPT,
            "sh",
            data_dir,
            binary,
            layout.ETCD_USER,
            layout.UNIT_NAME,
            str(len(TEXT_FILES)),
            "hash" if hash_binary else "no",
            str(len(stray_patterns)),
            str(len(guards)),
            *TEXT_FILES,
            *stray_patterns,
            *guards,
            *paths,
            *dirs,
        ],
        timeout=60,
    )
    sections = parse_observation(result.stdout.decode(errors="replace"))
    states = parse_files(sections.get("files", []))
    files: dict[str, FileState | None] = {}
    for path in paths:
        state = states.get(path)
        files[path] = None if state is None or state[0] == "-" else FileState(*state)
    dir_states: dict[str, tuple[int, str, str] | None] = {}
    for d in dirs:
        state = states.get(d)
        dir_states[d] = None if state is None else (state[1], state[2], state[3])
    texts: dict[str, bytes | None] = {}
    for path in TEXT_FILES:
        body = sections.get(f"text {path}", ["-"])
        texts[path] = None if body == ["-"] else base64.b64decode("".join(body))
    unit = parse_systemctl_show("\n".join(sections.get("unit", [])))
    loaded = unit.get("LoadState") == "loaded"
    binsha = (sections.get("binsha") or ["-"])[0]
    return HostObserved(
        member=member,
        etcd_user=sections.get("user") == ["yes"],
        files=files,
        dirs=dir_states,
        texts=texts,
        active_state=unit.get("ActiveState", "inactive") if loaded else "inactive",
        unit_file_state=unit.get("UnitFileState", "") if loaded else "",
        has_data=sections.get("data") == ["yes"],
        binary_sha256=None if binsha == "-" else binsha,
        binary_version=parse_etcd_version("\n".join(sections.get("version", []))),
        listeners=parse_listeners("\n".join(sections.get("ss", []))),
        unit_path=unit.get("FragmentPath", "") if loaded else "",
        main_argv=parse_cmdline("".join(sections.get("cmdline", ["-"]))),
        data_foreign_owned=sections.get("dataowner") == ["foreign"],
        strays=parse_strays(sections.get("strays", [])),
        guards={g: tuple(sections.get(f"guard {g}", [])) for g in guards},
        binary_guard=tuple(sections.get("binguard", [])),
    )
