import os
import sys
from pathlib import Path

import pytest

# gRPC's C core logs every refused TLS handshake to stderr; the tests assert on our own messages instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# tests/ helpers (etcd_binaries) importable from every test package
sys.path.insert(0, str(Path(__file__).parent))


# The suite runs on two pytest-xdist workers (scripts/test: -n 2 --dist loadgroup) in streams that
# share nothing, each a scheduling group: the tests that start etcd on 127.0.0.x (one after another: they
# pick free address blocks, or the default 127.0.0.1-3), the backup tests (127.0.0.71-73, and throwaway
# clusters on 127.0.0.200+), the kill-point suite in two halves (each with its own fixed blocks,
# 127.0.0.111-189) and the test hosts (their own network namespaces); the unit and interop tests fill in
# wherever a worker is free. Streams are handed out longest first, so the two workers finish together.
_GROUPS = {"integration": "loopback", "hosts": "test-hosts"}
_OWN_GROUP = {"test_backup.py": "backup"}
#: the kill-point tests of the second half (the rest are the first)
_KILLPOINTS_B = ("replace", "up_from", "destroy", "restore", "recover", "peer_ca")
#: the order streams are handed out in (measured: hosts ~13 min, loopback ~12, backup ~6, each half of
#: the kill points ~3.5)
_ORDER = ("test-hosts", "loopback", "backup", "killpoints-a", "killpoints-b")


def _group(item: pytest.Item, root: Path) -> str | None:
    path = Path(str(item.fspath))
    if path.name == "test_killpoints.py":
        return "killpoints-b" if any(k in item.name for k in _KILLPOINTS_B) else "killpoints-a"
    return _OWN_GROUP.get(path.name) or _GROUPS.get(path.relative_to(root).parts[0])


def pytest_configure(config: pytest.Config) -> None:
    from etcd_binaries import ROTATION_ENV, rotation

    os.environ.setdefault(ROTATION_ENV, str(rotation()))  # the workers inherit it: one choice per run


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into scheduling groups
def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    root = Path(__file__).parent
    groups = {}
    for item in items:
        group = _group(item, root)
        groups[item.nodeid] = group
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    rank = {g: i for i, g in enumerate(_ORDER)}
    items.sort(key=lambda it: rank.get(groups[it.nodeid] or "", len(rank)))  # stable: files keep their order
