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


def test_endpoint_argument_must_be_known() -> None:
    async def main() -> None:
        async with EtcdClient(["http://127.0.0.1:1"], None) as c:
            await c.status("http://127.0.0.1:2")

    import asyncio

    with pytest.raises(ValueError, match="not one of"):
        asyncio.run(main())


def test_member_status_leader_flag_and_id_format() -> None:
    st = MemberStatus("e", 0xABC, 1, "3.5.1", 1, 1, 0xABC, 2, 3, 3, False, (), 4)
    assert st.is_leader and format_member_id(st.member_id) == "abc"
    assert not MemberStatus("e", 1, 1, "3.5.1", 1, 1, 0, 2, 3, 3, False, (), 4).is_leader
