import os
import sys
from pathlib import Path

import pytest

# gRPC's C core logs every refused TLS handshake to stderr; the tests assert on our own messages instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# tests/ helpers (etcd_binaries) importable from every test package
sys.path.insert(0, str(Path(__file__).parent))


# The suite runs on two pytest-xdist workers (scripts/test: -n 2 --dist loadgroup) in two streams that
# share nothing: the tests that start etcd on 127.0.0.x (one after another: they pick free address
# blocks, and the kill-point suite owns fixed ones) and the test hosts (their own network namespaces),
# with the unit and interop tests filling in wherever a worker is free.
_GROUPS = {"integration": "loopback", "hosts": "test-hosts"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into scheduling groups
def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    root = Path(__file__).parent
    for item in items:
        part = Path(str(item.fspath)).relative_to(root).parts[0]
        if part in _GROUPS:
            item.add_marker(pytest.mark.xdist_group(_GROUPS[part]))
