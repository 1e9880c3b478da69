"""Client construction rules and the cheap-import promise (no network here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etcdforge.etcd import EtcdClient, MemberStatus, TlsFiles, format_member_id


def test_importing_the_package_does_not_load_grpc_or_protobuf() -> None:
    code = (
        "import sys, etcdforge.etcd; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_tls_files_need_cert_and_key_together() -> None:
    with pytest.raises(ValueError, match="together"):
        TlsFiles(Path("ca.pem"), Path("c.pem"), None)
    assert TlsFiles(Path("ca.pem")).cert is None


@pytest.mark.parametrize("bad", [[], ["127.0.0.1:2379"], "https://127.0.0.1:2379"])
def test_endpoints_are_validated(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        EtcdClient(bad, None)  # type: ignore[arg-type]


def test_endpoint_argument_may_be_any_member_but_must_be_a_url() -> None:
    """A member the cluster lists but the spec lacks (an interrupted add's learner) can be asked: it is
    tried (here: nothing listens, an etcd error, not a crash); a malformed URL is a bug."""
    import asyncio

    from etcdforge.errors import EtcdUnavailable

    async def ask(endpoint: str) -> None:
        async with EtcdClient(["http://127.0.0.1:1"], None, timeout=1.0) as c:
            await c.status(endpoint)

    with pytest.raises(EtcdUnavailable):
        asyncio.run(ask("http://127.0.0.1:2"))
    with pytest.raises(ValueError):
        asyncio.run(ask("127.0.0.1:2"))


def test_member_status_leader_flag_and_id_format() -> None:
    st = MemberStatus("e", 0xABC, 1, "3.5.1", 1, 1, 0xABC, 2, 3, 3, False, (), 4)
    assert st.is_leader and format_member_id(st.member_id) == "abc"
    assert not MemberStatus("e", 1, 1, "3.5.1", 1, 1, 0, 2, 3, 3, False, (), 4).is_leader
