import os
import sys
from pathlib import Path

import pytest

# gRPC's C core logs every refused TLS handshake to stderr; the tests assert on our own messages instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# tests/ helpers (etcd_binaries) importable from every test package
sys.path.insert(0, str(Path(__file__).parent))


# The suite runs on two pytest-xdist workers (scripts/test: -n 2 --dist loadgroup) in three streams that
# share nothing, each a scheduling group: the tests that start etcd on 127.0.0.x (one after another: they
# pick free address blocks, or the default 127.0.0.1-3), the kill-point suite (its own fixed blocks,
# 127.0.0.111-135, which no other test uses) and the test hosts (their own network namespaces); the unit
# and interop tests fill in wherever a worker is free.
_GROUPS = {"integration": "loopback", "hosts": "test-hosts"}
_OWN_GROUP = {"test_killpoints.py": "killpoints"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into scheduling groups
def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    root = Path(__file__).parent
    for item in items:
        part = Path(str(item.fspath)).relative_to(root).parts[0]
        group = _OWN_GROUP.get(Path(str(item.fspath)).name) or _GROUPS.get(part)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
