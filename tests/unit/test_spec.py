"""Spec validation: a table of good and bad inputs, each bad one with the field path in the error."""

from __future__ import annotations

import pytest

from etcdforge.errors import SpecError
from etcdforge.spec import dump_spec, load_spec_text, parse_spec

BASE = """\
name: demo
token: demo-token
members:
  - {name: etcd1, address: 127.0.0.1}
  - {name: etcd2, address: 127.0.0.2}
  - {name: etcd3, address: 127.0.0.3}
"""


def with_(extra: str, members: str | None = None) -> str:
    head = "name: demo\ntoken: demo-token\n" + extra
    body = members or (
        "members:\n  - {name: etcd1, address: 127.0.0.1}\n  - {name: etcd2, address: 127.0.0.2}\n"
        "  - {name: etcd3, address: 127.0.0.3}\n"
    )
    return head + body


GOOD = [
    BASE,
    with_("etcd: {heartbeat_interval_ms: 200, election_timeout_ms: 1000}\n"),
    with_(
        "etcd: {quota_backend_bytes: 4294967296, auto_compaction_mode: revision,"
        " auto_compaction_retention: '1000'}\n"
    ),
    with_("etcd: {auto_compaction_retention: 30m}\n"),
    with_("pki: {key: {algo: rsa, size: 4096}, cert_expiry: 43800h}\n"),
    with_("pki: {subject: {C: CN, ST: ShangHai, L: ShangHai, O: CA, OU: China}}\n"),
    with_("pki: {clients: [admin, apisix]}\n"),
    with_(
        "mode: hosts\n", "members:\n  - {name: etcd1, address: 192.0.2.10, dns_names: [etcd1.example.com]}\n"
    ),
    with_("", "members:\n  - {name: etcd1, address: '::1'}\n"),
]


@pytest.mark.parametrize("text", GOOD)
def test_good_specs_load_and_round_trip(text: str) -> None:
    spec = load_spec_text(text)
    assert load_spec_text(dump_spec(spec)) == spec


BAD = [
    (with_("etcd: {heartbeat_interval_ms: 300}\n"), "etcd: election_timeout_ms (1000) must be at least 5"),
    (with_("etcd: {election_timeout_ms: 60000}\n"), "at most 50000"),
    (with_("etcd: {client_port: 2380}\n"), "client_port and peer_port are both 2380"),
    (with_("etcd: {client_port: 70000}\n"), "etcd.client_port"),
    (with_("etcd: {auto_compaction_mode: hourly}\n"), "etcd.auto_compaction_mode"),
    (with_("etcd: {auto_compaction_mode: revision, auto_compaction_retention: 5m}\n"), "number of revisions"),
    (with_("etcd: {version: latest}\n"), "etcd.version: 'latest' is not a version"),
    (with_("etcd: {heartbeat: 100}\n"), "etcd.heartbeat: unknown field"),
    (with_("pki: {key: {algo: rsa, size: 1024}}\n"), "pki.key: RSA size 1024"),
    (with_("pki: {key: {algo: ecdsa, size: 300}}\n"), "pki.key: ECDSA size 300"),
    (with_("pki: {key: {algo: dsa}}\n"), "pki.key.algo"),
    (with_("pki: {cert_expiry: 365d}\n"), 'pki.cert_expiry: time: unknown unit "d"'),
    (with_("pki: {ca_expiry: ten years}\n"), "pki.ca_expiry"),
    (with_("pki: {subject: {C: China}}\n"), "pki.subject.C: 'China' is not a two-letter country code"),
    (with_("pki: {clients: [apisix]}\n"), "pki.clients: must include 'admin'"),
    (
        with_("", "members:\n  - {name: etcd1, address: 10.0.0.300}\n"),
        "members[0].address: '10.0.0.300' is not an IP",
    ),
    (with_("", "members:\n  - {name: Etcd_1, address: 127.0.0.1}\n"), "members[0].name"),
    (with_("", "members: []\n"), "at least one member"),
    (
        with_("", "members:\n  - {name: a, address: 127.0.0.1}\n  - {name: a, address: 127.0.0.2}\n"),
        "members[1].name: 'a' is used by two",
    ),
    (
        with_("", "members:\n  - {name: a, address: 127.0.0.1}\n  - {name: b, address: 127.0.0.1}\n"),
        "members[1].address: '127.0.0.1' is used by two",
    ),
    (with_("", "members:\n  - {name: a, address: 192.0.2.1}\n"), "not a loopback address; local mode"),
    (
        with_("", "members:\n  - {name: a, address: 127.0.0.1, dns_names: ['bad name']}\n"),
        "members[0].dns_names",
    ),
    ("name: demo\n", "token: required field is missing"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: demo\nname: other\n", "duplicate key 'name'"),
    ("name: [unclosed\n", "cluster.yaml:"),
    (with_("mode: cloud\n"), "mode"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_specs_name_the_field_and_the_fix(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(text)
    assert expected in str(info.value)


def test_norway_problem_is_not_a_boolean() -> None:
    spec = load_spec_text(with_("pki: {subject: {C: 'NO', ST: no, O: off}}\n"))
    assert spec.pki.subject.ST == "no"
    assert spec.pki.subject.O == "off"
    # an unquoted NO stays the string "NO", never False
    spec = load_spec_text(with_("pki: {subject: {C: NO}}\n"))
    assert spec.pki.subject.C == "NO"


def test_even_size_and_big_quota_warn() -> None:
    spec = load_spec_text(
        with_(
            "etcd: {quota_backend_bytes: 10737418240}\n",
            "members:\n  - {name: a, address: 127.0.0.1}\n  - {name: b, address: 127.0.0.2}\n",
        )
    )
    warnings = " ".join(spec.warnings())
    assert "even size" in warnings
    assert "8 GiB" in warnings


def test_spec_is_frozen() -> None:
    spec = load_spec_text(BASE)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is an implementation detail
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "path", ["/", "/var", "/etc", "/var/lib", "relative/dir", "/var/lib/../../etc", "/usr"]
)
def test_data_dir_must_be_a_dedicated_absolute_directory(path: str) -> None:
    """etcdforge creates, chowns and partly wipes the data dir: never a system directory."""
    with pytest.raises(SpecError, match=r"etcd\.data_dir"):
        parse_spec({"name": "t", "token": "tok", "mode": "hosts", "etcd": {"data_dir": path},
                    "members": [{"name": "etcd1", "address": "10.0.0.1"}]})  # fmt: skip


def test_data_dir_is_refused_unless_canonical() -> None:
    """Not silently normalised: the spec says exactly the path that is used (see test_hostpaths.py)."""
    with pytest.raises(SpecError, match="write it as '/srv/etcd/data'"):
        parse_spec({"name": "t", "token": "tok", "mode": "hosts", "etcd": {"data_dir": "/srv/etcd/data/"},
                    "members": [{"name": "etcd1", "address": "10.0.0.1"}]})  # fmt: skip


def test_tls_policy_defaults_to_aead_suites_and_refuses_weak_ones() -> None:
    def spec(**tls: object) -> object:
        return parse_spec({"name": "t", "token": "tok", "etcd": {"tls": tls, **tls.pop("etcd", {})},  # type: ignore[dict-item]
                           "members": [{"name": "etcd1", "address": "127.0.0.1"}]})  # fmt: skip

    default = parse_spec(
        {"name": "t", "token": "tok", "members": [{"name": "etcd1", "address": "127.0.0.1"}]}
    )
    assert all("GCM" in s for s in default.etcd.tls.cipher_suites) and default.etcd.tls.min_version is None
    with pytest.raises(SpecError, match="not an AEAD ECDHE suite"):
        spec(cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"])
    with pytest.raises(SpecError, match="not an AEAD ECDHE suite"):
        spec(cipher_suites=["TLS_RSA_WITH_AES_128_GCM_SHA256"])  # RSA key exchange: no forward secrecy
    with pytest.raises(SpecError, match="cipher_suites: \\[\\]"):
        spec(min_version="TLS1.3")
    with pytest.raises(SpecError, match=r"needs etcd 3\.4\.25"):
        spec(min_version="TLS1.2", etcd={"version": "3.4.23"})
    assert spec(min_version="TLS1.2", etcd={"version": "3.5.8"})
    assert "CBC-SHA1" in " ".join(spec(cipher_suites=[]).warnings())  # type: ignore[attr-defined]
