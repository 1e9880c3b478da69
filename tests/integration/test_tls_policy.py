"""Security item 3, with real etcd (both versions) and the real openssl client: every listener, client and
peer, refuses TLS 1.1 and a CBC suite, and accepts an AEAD ECDHE suite. (TLS 1.3 is not asserted: etcd
3.5 caps a listener with configured suites at TLS 1.2, 3.4 also offers 1.3; both are AEAD-only.) The client
certificate is presented each time, so the only reason for a refusal is the protocol or the suite."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import need_interop_binaries, run_cli

from etcdforge import topology
from etcdforge.workspace import load_workspace

pytestmark = pytest.mark.integration

CASES = {
    "aead": (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], True),
    "cbc": (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"], False),
    "tls11": (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], False),
}


def handshake(address: str, ca: Path, cert: Path, key: Path, args: list[str]) -> tuple[bool, str]:
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-CAfile", str(ca), "-cert", str(cert), "-key", str(key),
         "-brief", *args],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    return proc.returncode == 0 and "CONNECTION ESTABLISHED" in text, text


def test_every_listener_refuses_old_protocols_and_cbc_suites(workspace: Path, etcd_bin: Path) -> None:
    need_interop_binaries("openssl")
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    ws, spec = load_workspace(workspace)
    config = Path(ws.member_paths("etcd1").config).read_text()
    assert "cipher-suites:" in config
    admin = ws.client_paths()
    for member in spec.members:
        paths = ws.member_paths(member.name)
        listeners = {
            "client": (topology.client_url(spec, member), Path(admin.cert), Path(admin.key), paths.ca_cert),
            # a member's own peer certificate is what a peer presents (signed by the peers' CA)
            "peer": (
                topology.peer_url(spec, member),
                Path(paths.peer_cert),
                Path(paths.peer_key),
                paths.peer_ca_cert,
            ),
        }
        for listener, (url, cert, key, ca) in listeners.items():
            for case, (args, expected) in CASES.items():
                ok, text = handshake(url.removeprefix("https://"), Path(ca), cert, key, args)
                assert ok is expected, (member.name, listener, case, text)
    # the cluster itself works with the policy (members talk to each other; our gRPC client too)
    status = json.loads(run_cli("status", "--dir", d, "-o", "json").stdout)
    assert len(status) == 3 and all(not s.get("error") for s in status)
