"""Paths the spec puts on hosts: the spec refuses hostile strings, the observation reports what a string
cannot show (symlinks, writable parents, somebody else's files), and the planner refuses both before any
step. The observation is the real script, run here on planted directories."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import need_root

from etcdforge import hostpaths, layout
from etcdforge.errors import PlanError, SpecError
from etcdforge.hosts import LocalHost
from etcdforge.observe.cluster import ClusterView
from etcdforge.observe.hosts import HostObserved, observe_host
from etcdforge.spec import parse_spec
from etcdforge.verbs.apply.plan import BinarySource, plan_apply

MEMBERS = [{"name": "etcd1", "address": "10.213.77.1"}]


def hosts_spec(**etcd: Any) -> Any:
    return parse_spec({"name": "t", "token": "tok", "mode": "hosts", "etcd": etcd, "members": MEMBERS})


# --- the spec ------------------------------------------------------------------------------------------

HOSTILE = [
    "//", "//etc", "/", "/usr/bin", "/etc/ssh", "/home/alice", "/root/.ssh", "/tmp/etcd", "/var/tmp/etcd",
    "/var/lib/etcd data", "/var/lib/etcd\nUser=root", "/var/lib/%h", "/var/lib/$HOME", "/var/lib/[/]",
    "/var/lib/./etcd", "/var/lib//etcd", "/var/lib/etcd/", "/var/lib/../../etc", "relative/dir", "/var",
    "/var/lib", "/srv", "/data", "/opt", "/mnt", "/run/etcd", "/dev/shm/etcd", "/proc/1", "/sys/x",
    "/boot/etcd", "/lib/etcd", "/lib64/etcd", "/sbin/etcd", "/bin/etcd", "/usr/local/etcd", "/var/log/etcd",
    "/var/lib/-rf", "/var/lib/.hidden", "/var/lib/et'cd", "/var/lib/et\"cd", "/var/lib/e*", "/var/lib/e\tc",
    "/dataset/../etc", "/var/lib/" + "x" * 300,
]  # fmt: skip


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_data_dirs_are_refused_with_one_line(path: str) -> None:
    with pytest.raises(SpecError) as info:
        hosts_spec(data_dir=path)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith("etcd.data_dir: ")
    assert "\n" not in problem.replace(repr(path), "")  # one line (the path itself is shown with repr)


@pytest.mark.parametrize(
    "path",
    ["/var/lib/etcd", "/var/lib/etcd/data", "/srv/etcd", "/opt/etcd/data", "/data/etcd", "/data1/etcd",
     "/data-ssd/etcd", "/mnt/disk1/etcd", "/var/opt/etcd", "/var/lib/etcd_2.0"],
)  # fmt: skip
def test_dedicated_data_dirs_are_accepted(path: str) -> None:
    assert hosts_spec(data_dir=path).etcd.data_dir == path


def test_non_canonical_paths_name_the_canonical_form() -> None:
    with pytest.raises(SpecError, match=r"write it as '/srv/etcd/data'"):
        hosts_spec(data_dir="/srv//etcd/./data/")


@pytest.mark.parametrize(
    "path",
    ["/usr/bin", "/bin", "/tmp/bin", "/home/alice/bin", "//usr/local/bin", "/usr/local/bin/", "relative",
     "/usr/local/bin\nUser=root", "/usr/local/%h", "/usr/local/$X", "/usr/local/b n", "/usr/local", "/etc"],
)  # fmt: skip
def test_hostile_install_dirs_are_refused(path: str) -> None:
    with pytest.raises(SpecError, match=r"etcd\.install_dir: "):
        hosts_spec(install_dir=path, source="upload")


def test_install_dir_inside_the_data_dir_is_refused() -> None:
    with pytest.raises(SpecError, match="overlap"):
        hosts_spec(install_dir="/opt/etcd/bin", data_dir="/opt/etcd", source="upload")
    assert hosts_spec(install_dir="/opt/etcd/bin", data_dir="/srv/etcd", source="upload")


@pytest.mark.parametrize(
    "binary", ["/tmp/etcd", "/home/u/etcd", "relative/etcd", "/usr/bin/etcd\nUser=root", "/usr/bin/%n",
               "//usr/bin/etcd", "/usr/bin/../../tmp/etcd", "/dev/shm/etcd"],
)  # fmt: skip
def test_hostile_system_binaries_are_refused(binary: str) -> None:
    with pytest.raises(SpecError, match=r"etcd\.binary: "):
        hosts_spec(binary=binary)


def test_a_local_mode_binary_is_a_local_path_and_not_judged_as_a_host_path() -> None:
    for binary in ("/home/me/etcd-v3.5.17/etcd", "etcd", "~/bin/etcd"):
        spec = parse_spec({"name": "t", "token": "tok", "etcd": {"binary": binary},
                           "members": [{"name": "etcd1", "address": "127.0.0.1"}]})  # fmt: skip
        assert spec.etcd.binary == binary


def test_a_relative_local_binary_is_refused_and_a_bare_name_never_comes_from_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security item 15: `etcd` must not mean a file named etcd in whatever directory one stands in."""
    from etcdforge import binaries
    from etcdforge.errors import BinaryError

    with pytest.raises(SpecError, match="relative"):
        parse_spec({"name": "t", "token": "tok", "etcd": {"binary": "bin/etcd"},
                    "members": [{"name": "etcd1", "address": "127.0.0.1"}]})  # fmt: skip
    planted = tmp_path / "etcd-planted"
    planted.write_text("#!/bin/sh\necho pwned\n")
    planted.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BinaryError, match="not on PATH"):
        binaries.find_tool("etcd", "etcd-planted")
    assert binaries.find_tool("etcd", "./etcd-planted") == planted  # an explicit path is taken as given


# --- the judges ------------------------------------------------------------------------------------------


def test_judges_name_each_host_problem() -> None:
    facts = ("link /etc", "parent /tmp 1777 0", "parent /srv/u 755 1000", "notdir")
    problems = hostpaths.host_path_problems("/srv/u/etcd", facts)
    assert problems[0] == "/srv/u/etcd is a symlink (to /etc); give a real directory"
    assert "world-writable" in problems[1] and "owned by uid 1000" in problems[2]
    assert problems[3] == "/srv/u/etcd exists and is not a directory"
    assert hostpaths.host_path_problems("/var/lib/etcd", ()) == ()
    assert hostpaths.foreign_data("/var/lib/etcd", ("foreign root member",)) is None
    assert hostpaths.foreign_data("/var/lib/etcd", ("foreign root member/lost+found",)) is None
    found = hostpaths.foreign_data("/var/lib/pg", ("foreign postgres base/member",))
    assert found is not None and "(base)" in found and "postgres" in found


# --- the real observation script on planted directories --------------------------------------------


def observe(root: Path, data_dir: str, *, binary: str = "/bin/true") -> HostObserved:
    observation = observe_host(
        LocalHost(), "etcd1", (), dirs=(), data_dir=data_dir, binary=binary, hash_binary=False,
        guards=(data_dir,),
    )  # fmt: skip
    return asyncio.run(observation)


@pytest.fixture
def safe_root() -> Iterator[Path]:
    """A root-owned 0755 directory in a root-owned 0755 chain (/run: pytest's tmp dirs are below the
    world-writable /tmp, which the guard rightly reports)."""
    need_root("judging root-owned trees")
    root = Path(tempfile.mkdtemp(prefix="etcdforge-test-", dir="/run"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root)


def test_the_script_reports_a_planted_symlink_and_it_is_refused(safe_root: Path) -> None:
    target = safe_root / "etc"
    target.mkdir()
    (safe_root / "etcd").symlink_to(target)
    seen = observe(safe_root, str(safe_root / "etcd"))
    facts = seen.guards[str(safe_root / "etcd")]
    assert facts[0] == f"link {target}"
    assert hostpaths.host_path_problems(str(safe_root / "etcd"), facts)[0].startswith(
        f"{safe_root}/etcd is a symlink"
    )


def test_the_script_reports_a_world_writable_parent(safe_root: Path) -> None:
    shared = safe_root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    seen = observe(safe_root, str(shared / "etcd"))
    assert f"parent {shared} 1777 0" in seen.guards[str(shared / "etcd")]


def test_the_script_reports_a_parent_owned_by_somebody_else(safe_root: Path) -> None:
    theirs = safe_root / "theirs"
    theirs.mkdir()
    os.chown(theirs, 1234, 1234)
    seen = observe(safe_root, str(theirs / "etcd"))
    assert f"parent {theirs} 755 1234" in seen.guards[str(theirs / "etcd")]


def test_the_script_reports_somebody_elses_populated_directory(safe_root: Path) -> None:
    data = safe_root / "pg"
    (data / "base").mkdir(parents=True)
    (data / "weird\nname").touch()
    facts = observe(safe_root, str(data)).guards[str(data)]
    assert len(facts) == 1 and facts[0].startswith("foreign root ")
    assert set(facts[0].split(" ", 2)[2].split("/")) == {"base", "weird?name"}
    # a root-written etcd data dir (a hand-built cluster) is etcd data: taken over, not refused
    etcd = safe_root / "etcd"
    (etcd / "member").mkdir(parents=True)
    facts = observe(safe_root, str(etcd)).guards[str(etcd)]
    assert hostpaths.foreign_data(str(etcd), facts) is None
    # a clean chain reports nothing at all
    assert observe(safe_root, str(safe_root / "new")).guards[str(safe_root / "new")] == ()


def test_the_script_never_runs_a_binary_others_could_replace(safe_root: Path) -> None:
    marker = safe_root / "ran"
    binary = safe_root / "etcd"
    binary.write_text(f"#!/bin/sh\ntouch {marker}\necho 'etcd Version: 3.4.23'\n")
    binary.chmod(0o775)  # group-writable
    seen = observe(safe_root, "/var/lib/etcd-none", binary=str(binary))
    assert seen.binary_version is None and not marker.exists()
    assert seen.binary_guard == (f"file {binary} 775 0",)
    binary.chmod(0o755)
    seen = observe(safe_root, "/var/lib/etcd-none", binary=str(binary))
    assert seen.binary_guard == () and seen.binary_version == "3.4.23" and marker.exists()


# --- the planner refuses before any step ----------------------------------------------------------------


def fresh_host(spec: Any, **changes: Any) -> HostObserved:
    return HostObserved(
        member="etcd1", etcd_user=False, files={}, dirs={}, texts={}, active_state="inactive",
        unit_file_state="", has_data=False, binary_sha256=None, binary_version="3.4.23", **changes,
    )  # fmt: skip


def desired_for(spec: Any) -> dict[str, tuple[layout.DesiredFile, ...]]:
    pki = {name: b"x" for name in layout.pki_names("etcd1")}
    return {"etcd1": layout.desired_files(spec, spec.members[0], pki)}


@pytest.mark.parametrize(
    ("guards", "binary_guard", "expected"),
    [
        ({"/var/lib/etcd": ("link /etc",)}, (), "etcd1: /var/lib/etcd is a symlink (to /etc)"),
        ({"/var/lib/etcd": ("parent /var/lib 777 0",)}, (), "which is world-writable"),
        ({"/var/lib/etcd": ("foreign postgres base",)}, (), "pass --force"),
        ({}, ("parent /usr/bin 777 0",), "/usr/bin/etcd is not run as root"),
    ],
)
def test_the_planner_refuses_unsafe_host_paths(
    guards: dict[str, tuple[str, ...]], binary_guard: tuple[str, ...], expected: str
) -> None:
    spec = hosts_spec()
    hosts = {"etcd1": fresh_host(spec, guards=guards, binary_guard=binary_guard)}
    with pytest.raises(PlanError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
        plan_apply(spec, desired_for(spec), hosts, ClusterView(reachable=False), BinarySource("system"))
    assert "\n" not in str(info.value)


def test_force_takes_over_a_foreign_data_dir_but_never_a_symlink() -> None:
    spec = hosts_spec()
    foreign = {"etcd1": fresh_host(spec, guards={"/var/lib/etcd": ("foreign alice notes.txt",)})}
    args = (desired_for(spec), foreign, ClusterView(reachable=False), BinarySource("system"))
    assert plan_apply(spec, *args, force=True).steps
    linked = {"etcd1": fresh_host(spec, guards={"/var/lib/etcd": ("link /etc",)})}
    with pytest.raises(PlanError, match="symlink"):
        plan_apply(spec, desired_for(spec), linked, ClusterView(reachable=False), BinarySource("system"),
                   force=True)  # fmt: skip


def test_guarded_dirs_include_the_install_dir_only_when_we_install() -> None:
    assert layout.guarded_dirs(hosts_spec()) == ("/var/lib/etcd", layout.ETC_DIR, layout.PKI_DIR)
    up = hosts_spec(source="upload", install_dir="/opt/etcd/bin")
    assert layout.guarded_dirs(up)[-1] == "/opt/etcd/bin"
