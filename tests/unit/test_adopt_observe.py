"""adopt's pure side: reading a hand-written unit and etcd's flags, and refusing what does not fit."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest

from etcdforge.errors import PlanError, SpecError
from etcdforge.observe.adopted import (
    HostFacts,
    check_cluster,
    check_members,
    exec_start,
    parse_files_output,
    parse_flags,
    parse_unit_output,
)
from etcdforge.verbs.adopt.run import merge_pki
from etcdforge.workspace import Workspace

IPS = ("192.168.10.80", "192.168.10.81", "192.168.10.82")
UNIT_PATH = "/usr/lib/systemd/system/etcd.service"
GUIDE_UNIT = """[Unit]
Description=Etcd Server

[Service]
Type=notify
ExecStart=/usr/bin/etcd \\
  --name=etcd2 \\
  --client-cert-auth=true \\
  --cert-file=/etc/etcd/pki/etcd-server.pem \\
  --trusted-ca-file=/etc/etcd/pki/etcd-ca.pem \\
  --peer-client-cert-auth=true \\
  --peer-trusted-ca-file=/etc/etcd/pki/etcd-ca.pem \\
  --advertise-client-urls=https://192.168.10.81:2379 \\
  --initial-advertise-peer-urls=https://192.168.10.81:2380 \\
  --initial-cluster=etcd1=https://192.168.10.80:2380,etcd2=https://192.168.10.81:2380 \\
  --initial-cluster-token=k8s-etcd-cluster \\
  --data-dir=/var/lib/etcd
Restart=on-failure
"""


def guide_argv(i: int, *extra: str) -> tuple[str, ...]:
    ip = IPS[i - 1]
    return (
        "/usr/bin/etcd", f"--name=etcd{i}", "--client-cert-auth=true",
        "--trusted-ca-file=/etc/etcd/pki/etcd-ca.pem", "--peer-client-cert-auth=true",
        "--peer-trusted-ca-file=/etc/etcd/pki/etcd-ca.pem", f"--advertise-client-urls=https://{ip}:2379",
        f"--listen-client-urls=https://{ip}:2379", f"--initial-advertise-peer-urls=https://{ip}:2380",
        "--initial-cluster-token=k8s-etcd-cluster", "--data-dir=/var/lib/etcd", *extra,
    )  # fmt: skip


def facts(i: int, *extra: str, **changes: object) -> HostFacts:
    argv = guide_argv(i, *extra)
    base = HostFacts(
        member=f"etcd{i}", address=IPS[i - 1], active_state="active", unit_path=UNIT_PATH,
        argv=argv, from_process=True, flags=parse_flags(argv),
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_guides_unit_gives_its_argv_and_flags() -> None:
    argv = exec_start(GUIDE_UNIT)
    assert argv is not None and argv[0] == "/usr/bin/etcd"
    flags = parse_flags(argv)
    assert flags["name"] == "etcd2" and flags["client-cert-auth"] == "true"
    assert flags["initial-cluster-token"] == "k8s-etcd-cluster"
    assert exec_start("[Service]\nExecStart=-/usr/bin/etcd --name x\n") == ("/usr/bin/etcd", "--name", "x")


def test_flags_read_like_gos_flag_package() -> None:
    flags = parse_flags(
        [
            "/usr/bin/etcd",
            "-name",
            "a",
            "--client-cert-auth",
            "--data-dir",
            "/d",
            "--snapshot-count=5",
            "x",
            "--y=1",
        ],
        {"ETCD_NAME": "ignored", "ETCD_HEARTBEAT_INTERVAL": "200"},
    )
    # a bool flag takes no separate value; parsing stops at the first non-flag; env fills the rest
    assert flags == {
        "name": "a", "client-cert-auth": "true", "data-dir": "/d", "snapshot-count": "5",
        "heartbeat-interval": "200",
    }  # fmt: skip


def test_guide_members_agree_and_give_the_cluster_settings() -> None:
    settings = check_members([facts(1), facts(2), facts(3)])
    assert (settings.binary, settings.data_dir, settings.token) == (
        "/usr/bin/etcd",
        "/var/lib/etcd",
        "k8s-etcd-cluster",
    )
    assert (settings.client_port, settings.peer_port, settings.ca_dir) == (2379, 2380, "/etc/etcd/pki")
    assert settings.ignored_flags == ()
    tuned = check_members([facts(i, "--heartbeat-interval=200", "--enable-pprof") for i in (1, 2, 3)])
    assert tuned.tuning == {"heartbeat_interval_ms": "200"} and tuned.ignored_flags == ("enable-pprof",)


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([facts(1, active_state="failed"), facts(2)], "etcd1 (192.168.10.80): etcd is not running"),
        ([facts(1, member="etcdx")], "etcd there runs as --name=etcd1"),
        ([facts(1, address="10.0.0.9")], "advertises 192.168.10.80 (peer)"),
        ([facts(1, "--config-file=/etc/etcd.yml")], "configured by a --config-file"),
        ([facts(1, "--wal-dir=/wal")], "--wal-dir is not supported"),
        ([facts(1, "--client-cert-auth=false")], "--client-cert-auth is off"),
        ([facts(1), facts(2, "--data-dir=/srv/etcd")], "the members differ in --data-dir"),
        ([facts(1, "--snapshot-count=10"), facts(2)], "the members differ in --snapshot-count"),
        ([facts(1, "--advertise-client-urls=http://192.168.10.80:2379")], "not a TLS cluster"),
        ([facts(1, "--peer-trusted-ca-file=/etc/etcd/pki/peer-ca.pem")], "etcdforge uses one CA for both"),
        ([facts(1, "--initial-advertise-peer-urls=https://192.168.10.80:2380,https://10.0.0.1:2380")],
         "exactly one URL"),
    ],
)  # fmt: skip
def test_what_does_not_fit_is_refused_with_one_line(hosts: list[HostFacts], message: str) -> None:
    with pytest.raises(PlanError) as err:
        check_members(hosts)
    assert message in str(err.value)


MEMBERS = [(f"etcd{i}", ip) for i, ip in enumerate(IPS, 1)]
LISTED = [(n, (f"https://{ip}:2380",), False) for n, ip in MEMBERS]


@pytest.mark.parametrize(
    ("listed", "unhealthy", "message"),
    [
        (LISTED, [], None),
        ([*LISTED, ("etcd4", ("https://10.0.0.4:2380",), False)], [], "the cluster also has etcd4"),
        (LISTED[:2], [], "etcd3 is not a member of the running cluster"),
        ([*LISTED[:2], ("etcd3", ("https://10.0.0.3:2380",), False)], [], "knows its peer URLs as"),
        ([*LISTED[:2], ("etcd3", LISTED[2][1], True)], [], "etcd3 is a learner"),
        ([*LISTED, ("", ("https://10.0.0.4:2380",), False)], [], "never started"),
        (LISTED, ["etcd2"], "etcd2 did not answer"),
    ],
)
def test_the_cluster_must_be_what_member_says(
    listed: list[tuple[str, tuple[str, ...], bool]], unhealthy: list[str], message: str | None
) -> None:
    settings = check_members([facts(1), facts(2), facts(3)])
    if message is None:
        check_cluster(settings, MEMBERS, listed, unhealthy)
        return
    with pytest.raises(PlanError, match=message):
        check_cluster(settings, MEMBERS, listed, unhealthy)


def test_host_script_outputs_are_parsed() -> None:
    argv = guide_argv(1)
    cmdline = base64.b64encode(b"\0".join(a.encode() for a in argv) + b"\0").decode()
    env = base64.b64encode(b"ETCD_NAME=etcd1\n").decode()
    unit = base64.b64encode(GUIDE_UNIT.encode()).decode()
    out = (
        "@show\nLoadState=loaded\nActiveState=active\nFragmentPath=/usr/lib/systemd/system/etcd.service\n"
        f"MainPID=42\n@cmdline\n{cmdline}\n@environ\n{env}\n@fragment\n{unit}\n@end\n"
    )
    show, got_argv, got_env, fragment = parse_unit_output(out)
    assert show["MainPID"] == "42" and got_argv == argv and got_env == {"ETCD_NAME": "etcd1"}
    assert fragment == GUIDE_UNIT
    files, secrets = parse_files_output(
        "@file /etc/etcd/pki/etcd-ca.pem\nQ0E=\n@secret /etc/etcd/pki/etcd-server-key.pem\n"
        "@file /etc/etcd/pki/etcd-ca-key.pem\nS0VZ\n@end\n"
    )
    assert files == {"/etc/etcd/pki/etcd-ca.pem": b"CA", "/etc/etcd/pki/etcd-ca-key.pem": b"KEY"}
    assert secrets == ("/etc/etcd/pki/etcd-server-key.pem",)


def test_pki_files_of_all_members_merge_and_one_ca_is_required() -> None:
    pki = "/etc/etcd/pki"
    ca = f"{pki}/etcd-ca.pem"
    merged, keys_on = merge_pki(
        {
            "etcd1": {ca: b"CA", f"{pki}/etcd-ca-key.pem": b"KEY", "/etc/etcd/csr/etcd-x-csr.json": b"{}"},
            "etcd2": {ca: b"CA", "/etc/etcd/pki/etcd-ca-key.pem": b"KEY", "/etc/etcd/pki/old-ca.pem": b"X"},
        },
        ca,
    )  # fmt: skip
    assert merged == {"etcd-ca.pem": b"CA", "etcd-ca-key.pem": b"KEY", "etcd-x-csr.json": b"{}"}
    assert keys_on == ("etcd1:/etc/etcd/pki/etcd-ca-key.pem", "etcd2:/etc/etcd/pki/etcd-ca-key.pem")
    with pytest.raises(PlanError, match="trust different CA files"):
        merge_pki({"etcd1": {ca: b"CA"}, "etcd2": {ca: b"OTHER"}}, ca)


def test_a_ca_key_imported_before_is_used_when_no_member_has_one(tmp_path: Path) -> None:
    from etcdforge.verbs.adopt.run import _with_workspace_ca_key
    from etcdforge.workspace import Workspace

    ws = Workspace(tmp_path)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_bytes(b"CA\n")
    (tmp_path / "pki" / "ca-key.pem").write_bytes(b"KEY")
    assert _with_workspace_ca_key({"etcd-ca.pem": b"CA"}, "etcd-ca.pem", ws) == {
        "etcd-ca.pem": b"CA", "etcd-ca-key.pem": b"KEY",
    }  # fmt: skip
    # another CA in the workspace is not taken; a key found on the members wins
    assert _with_workspace_ca_key({"etcd-ca.pem": b"OTHER"}, "etcd-ca.pem", ws) == {"etcd-ca.pem": b"OTHER"}
    on_hosts = {"etcd-ca.pem": b"CA", "etcd-ca-key.pem": b"HOST"}
    assert _with_workspace_ca_key(on_hosts, "etcd-ca.pem", ws) == on_hosts


def test_tls_hardening_is_carried_over_and_weak_suites_are_named() -> None:
    """Security item 3: adopt keeps a cluster's --cipher-suites / --tls-min-version (AEAD suites only)."""
    suites = "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
    hardened = check_members([facts(i, suites, "--tls-min-version=TLS1.2") for i in (1, 2, 3)])
    assert hardened.tls == {
        "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        "min_version": "TLS1.2",
    }
    assert hardened.tls_notes == (
        "--cipher-suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA not kept (only AEAD ECDHE suites are)",
    )
    assert hardened.ignored_flags == ()
    with pytest.raises(PlanError, match="differ in --cipher-suites"):
        check_members([facts(1, suites), facts(2)])
    assert check_members([facts(1), facts(2)]).tls == {}


def test_auth_token_is_carried_over_and_a_peer_filter_is_replaced_by_the_peers_ca() -> None:
    """Security item 3: --auth-token goes into the spec (etcd.auth_token, rendered as etcd's auth-token);
    --peer-cert-allowed-cn is not dropped silently: the note names what replaces it."""
    jwt = "--auth-token=jwt,pub-key=/etc/etcd/jwt.pub,priv-key=/etc/etcd/jwt.key,sign-method=RS256"
    adopted = check_members([facts(i, jwt, "--peer-cert-allowed-cn=etcd") for i in (1, 2, 3)])
    assert adopted.tuning["auth_token"] == jwt.removeprefix("--auth-token=")
    assert adopted.ignored_flags == ()
    (note,) = adopted.tls_notes
    assert "--peer-cert-allowed-cn=etcd" in note and "pki rotate-ca --peer" in note
    with pytest.raises(PlanError, match="differ in --auth-token"):
        check_members([facts(1, jwt), facts(2)])
    from etcdforge import render
    from etcdforge.spec import parse_spec

    token = adopted.tuning["auth_token"]
    spec = parse_spec({"name": "t", "token": "t", "mode": "local", "etcd": {"auth_token": token},
                       "members": [{"name": "etcd1", "address": "127.0.0.2"}]})  # fmt: skip
    config = render.etcd_config(spec, spec.members[0], Workspace(Path("/w")).member_paths("etcd1"))
    assert b"auth-token: jwt,pub-key=/etc/etcd/jwt.pub," in config
    for bad in ("jwt\nUser=root", "jwt,priv-key=/x y", "other", "jwt,pub-key=$HOME"):
        with pytest.raises(SpecError):
            parse_spec({"name": "t", "token": "t", "mode": "local", "etcd": {"auth_token": bad},
                        "members": [{"name": "etcd1", "address": "127.0.0.2"}]})  # fmt: skip
