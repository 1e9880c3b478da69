"""Topology math and golden files for the rendered etcd config, systemd unit and etcdctl env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from etcdforge import render, topology
from etcdforge.render import ClientPaths, MemberPaths
from etcdforge.spec import ClusterSpec, load_spec_text

GOLDEN = Path(__file__).parent / "golden"

LOCAL = load_spec_text(
    """\
name: demo
token: demo-token
etcd: {heartbeat_interval_ms: 100, election_timeout_ms: 1000, quota_backend_bytes: 4294967296}
members:
  - {name: etcd1, address: 127.0.0.1}
  - {name: etcd2, address: 127.0.0.2}
  - {name: etcd3, address: 127.0.0.3}
"""
)
HOSTS = load_spec_text(
    """\
name: k8s-etcd
token: k8s-etcd-cluster
mode: hosts
etcd: {data_dir: /var/lib/etcd, snapshot_count: 10000, auto_compaction_retention: "1"}
members:
  - {name: etcd1, address: 192.168.10.80, dns_names: [kube-master-1]}
  - {name: etcd2, address: 192.168.10.81}
  - {name: etcd3, address: 192.168.10.82}
"""
)
PATHS = MemberPaths(
    config="/etc/etcd/etcd.conf.yml",
    data_dir="/var/lib/etcd",
    ca_cert="/etc/etcd/pki/ca.pem",
    server_cert="/etc/etcd/pki/server.pem",
    server_key="/etc/etcd/pki/server-key.pem",
    peer_cert="/etc/etcd/pki/peer.pem",
    peer_key="/etc/etcd/pki/peer-key.pem",
    peer_ca_cert="/etc/etcd/pki/peer-ca.pem",
)


def check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("ETCDFORGE_UPDATE_GOLDEN") == "1":
        path.write_bytes(data)
    assert path.read_bytes().decode() == data.decode(), f"{name} differs (ETCDFORGE_UPDATE_GOLDEN=1 updates)"


@pytest.mark.parametrize(("spec", "tag"), [(LOCAL, "local"), (HOSTS, "hosts")])
def test_etcd_config_golden(spec: ClusterSpec, tag: str) -> None:
    check_golden(f"etcd-{tag}-etcd1.conf.yml", render.etcd_config(spec, spec.members[0], PATHS))


def test_config_avoids_the_config_file_traps() -> None:
    conf = yaml.safe_load(render.etcd_config(HOSTS, HOSTS.members[1], PATHS))
    # TLS nested with un-prefixed keys; prefixed top-level keys would be silently ignored by etcd
    assert conf["peer-transport-security"]["cert-file"] == PATHS.peer_cert
    assert conf["peer-transport-security"]["client-cert-auth"] is True
    assert conf["client-transport-security"]["client-cert-auth"] is True
    assert not any(k.startswith(("peer-cert", "cert-file", "trusted-ca")) for k in conf)
    # URLs are comma-separated strings, and a host also listens on loopback for etcdctl on the node
    assert conf["listen-client-urls"] == "https://192.168.10.81:2379,https://127.0.0.1:2379"
    assert conf["initial-cluster"] == (
        "etcd1=https://192.168.10.80:2380,etcd2=https://192.168.10.81:2380,etcd3=https://192.168.10.82:2380"
    )
    assert conf["strict-reconfig-check"] is True
    assert conf["enable-grpc-gateway"] is True
    assert "force-new-cluster" not in conf
    assert not any("skip-client-san" in str(v) for v in conf.values())


def test_joining_member_config_lists_current_members_plus_itself() -> None:
    joining = render.etcd_config(
        LOCAL, LOCAL.members[2], PATHS, state="existing", initial_members=LOCAL.members[1:]
    )
    conf = yaml.safe_load(joining)
    assert conf["initial-cluster-state"] == "existing"
    assert conf["initial-cluster"] == "etcd2=https://127.0.0.2:2380,etcd3=https://127.0.0.3:2380"


def test_local_member_listens_only_on_its_own_address() -> None:
    conf = yaml.safe_load(render.etcd_config(LOCAL, LOCAL.members[1], PATHS))
    assert conf["listen-client-urls"] == "https://127.0.0.2:2379"


def test_systemd_unit_golden() -> None:
    unit = render.systemd_unit(HOSTS, HOSTS.members[0], etcd_binary="/usr/bin/etcd", config_path=PATHS.config)
    check_golden("etcd1.service", unit)
    text = unit.decode()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "RestartSec=5",
        "LimitNOFILE=65536",
        "TimeoutStartSec=infinity",
    ):
        assert line in text.splitlines()


def test_etcdctl_env_golden_and_quoting() -> None:
    env = render.etcdctl_env(
        topology.client_urls(LOCAL),
        ClientPaths(
            ca_cert="/w/pki/ca.pem", cert="/w/pki/admin-client.pem", key="/w/my dir/admin-client-key.pem"
        ),
    )
    check_golden("etcdctl.env", env)
    assert "export ETCDCTL_KEY='/w/my dir/admin-client-key.pem'" in env.decode()


@pytest.mark.parametrize(
    ("voters", "quorum", "tolerance"), [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (7, 4, 3)]
)
def test_quorum_math(voters: int, quorum: int, tolerance: int) -> None:
    assert topology.quorum(voters) == quorum
    assert topology.fault_tolerance(voters) == tolerance


def test_quorum_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        topology.quorum(0)


def test_member_sans_are_per_member_plus_loopback() -> None:
    sans = topology.member_sans(HOSTS.members[0])
    assert sans.ips == ("192.168.10.80", "127.0.0.1")
    assert sans.dns == ("kube-master-1", "localhost")
    # a local member on 127.0.0.1 does not list it twice
    assert topology.member_sans(LOCAL.members[0]).ips == ("127.0.0.1",)
    # another member's address never appears
    assert "192.168.10.81" not in sans.ips


def test_urls_bracket_ipv6() -> None:
    spec = load_spec_text("name: v6\ntoken: t\nmembers:\n  - {name: a, address: '::1'}\n")
    assert topology.client_url(spec, spec.members[0]) == "https://[::1]:2379"


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [("/usr/bin/etcd", "/usr/bin/etcd"), ("/opt/my etcd/etcd", '"/opt/my etcd/etcd"'), ("a%hb", "a%%hb"),
     ("x$HOME", "x$$HOME"), ('q"uote', '"q\\"uote"'), ("back\\slash", "back\\\\slash"), ("it's", '"it\'s"'),
     (";", "\\;"), ("", '""')],
)  # fmt: skip
def test_systemd_quote_escapes_specifiers_variables_and_quotes(arg: str, quoted: str) -> None:
    assert render.systemd_quote(arg) == quoted


def test_a_newline_never_reaches_a_unit() -> None:
    """Security item 2: a newline in the binary would add a directive after User=etcd (User=root)."""
    spec = HOSTS
    with pytest.raises(ValueError, match="control character"):
        render.systemd_unit(spec, spec.members[0], etcd_binary="/usr/bin/etcd\nUser=root", config_path="/c")
    unit = render.systemd_unit(spec, spec.members[0], etcd_binary="/opt/e%h/$X etcd", config_path="/c")
    assert b'ExecStart="/opt/e%%h/$$X etcd" --config-file /c\n' in unit
