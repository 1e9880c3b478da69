"""The hosts planner on a hand-built cluster (the guide's): foreign unit, root-owned data, CA key on members.

Pure: observations are constructed, nothing runs. See test_remote_plan.py for the ordinary cases.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import replace
from pathlib import Path

from support import need_interop_binaries
from test_remote_plan import NAMES, SPEC, SYSTEM, cluster, desired, host, ids

from etcdforge import layout
from etcdforge.observe.cluster import ClusterView
from etcdforge.observe.hosts import (
    HostObserved,
    parse_cmdline,
    parse_observation,
    parse_strays,
)
from etcdforge.plan import HostCommand, RestartMember
from etcdforge.verbs.apply.plan import plan_apply

GUIDE_UNIT = "/usr/lib/systemd/system/etcd.service"
GUIDE_ARGV = ("/usr/bin/etcd", "--name=etcd1", "--client-cert-auth=true", "--data-dir=/var/lib/etcd")
CA_KEY = b"-----BEGIN RSA PRIVATE KEY-----\nguide\n-----END RSA PRIVATE KEY-----\n"
CA_KEY_SHA = hashlib.sha256(CA_KEY).hexdigest()
GUIDE_KEY_PATH = f"{layout.PKI_DIR}/etcd-ca-key.pem"


def guide_host(member: str, **changes: object) -> HostObserved:
    """A member of the guide's cluster: etcd running as root from its own unit, none of our files."""
    fresh = host(member, fresh=True)
    base = replace(
        fresh,
        active_state="active",
        unit_file_state="enabled",
        has_data=True,
        dirs={**fresh.dirs, layout.ETC_DIR: (0o755, "root", "root"), layout.PKI_DIR: (0o755, "root", "root"),
              layout.DEFAULT_DATA_DIR: (0o755, "root", "root")},
        unit_path=GUIDE_UNIT,
        main_argv=GUIDE_ARGV,
        data_foreign_owned=True,
        strays={GUIDE_KEY_PATH: CA_KEY_SHA},
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_guide_cluster_rolls_onto_our_unit_leader_last_data_handed_over_while_stopped() -> None:
    hosts = {n: guide_host(n) for n in NAMES}
    plan = plan_apply(
        SPEC, desired(), hosts, cluster(leader="etcd1"), SYSTEM, ca_key_ids=frozenset({CA_KEY_SHA})
    )
    steps = ids(plan)
    # no member is started as a new cluster: each running one is restarted, one at a time, leader last
    assert "cluster/start" not in steps
    rolling = [s for s in steps if s.endswith(("/restart", "/move-leader"))]
    assert rolling == ["etcd2/restart", "etcd3/restart", "etcd1/move-leader", "etcd1/restart"]
    for n in NAMES:
        restart = next(s for s in plan.steps if s.id == f"{n}/restart")
        assert isinstance(restart.action, RestartMember)
        chown = ("find", layout.DEFAULT_DATA_DIR, "-xdev", "(", "!", "-user", "etcd", "-o", "!", "-group",
                 "etcd", ")", "-execdir", "chown", "-h", "etcd:etcd", "{}", "+")  # fmt: skip
        assert restart.action.before_start == (chown,)  # while stopped, not while root etcd still writes
        assert "not etcdforge's unit" in restart.reason and GUIDE_UNIT in restart.reason
        assert f"{n}/chown-data" not in steps
        # the CA key copy is deleted, the guide's unit is shadowed by ours and said so
        remove = next(s for s in plan.steps if s.id == f"{n}/remove:{GUIDE_KEY_PATH}")
        assert isinstance(remove.action, HostCommand)
        assert remove.action.argv == ("rm", "-f", "--", GUIDE_KEY_PATH)
        unit = next(s for s in plan.steps if s.id == f"{n}/file:{layout.UNIT}")
        assert f"overrides {GUIDE_UNIT}" in unit.reason
    # all preparation comes before the first restart
    first_restart = steps.index("etcd2/restart")
    assert all(s.group == "prepare" for s in plan.steps[:first_restart])


def test_a_ca_key_that_is_not_ours_is_only_warned_about() -> None:
    hosts = {n: guide_host(n) for n in NAMES}
    hosts["etcd2"] = guide_host("etcd2", strays={f"{layout.PKI_DIR}/other-ca-key.pem": "f" * 64})
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM, ca_key_ids=frozenset({CA_KEY_SHA}))
    assert not any(s.id.startswith("etcd2/remove:") for s in plan.steps)
    assert any("other-ca-key.pem" in w and "not this cluster's CA key" in w for w in plan.warnings)
    # without the control CA key's digest nothing is deleted anywhere
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert not any("/remove:" in s for s in ids(plan))


def test_stopped_member_with_root_owned_data_is_handed_over_before_start() -> None:
    hosts = {n: host(n) for n in NAMES}
    hosts["etcd3"] = host("etcd3", running=False, active_state="inactive", data_foreign_owned=True)
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM)
    assert ids(plan) == ["etcd3/chown-data", "cluster/start", "cluster/wait-healthy"]


def test_our_own_running_unit_is_not_restarted() -> None:
    hosts = {n: host(n, unit_path=layout.UNIT, main_argv=layout.unit_argv(SPEC)) for n in NAMES}
    assert plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM, ca_key_ids=frozenset({CA_KEY_SHA})).empty


def test_unreachable_guide_cluster_with_data_everywhere_is_not_refused() -> None:
    # `plan` before the first apply has no admin certificate yet: the cluster is not asked
    hosts = {n: guide_host(n) for n in NAMES}
    plan = plan_apply(SPEC, desired(), hosts, ClusterView(reachable=False), SYSTEM)
    assert [s for s in ids(plan) if s.endswith("/restart")] == [f"{n}/restart" for n in NAMES]


def test_parsers_of_the_new_sections() -> None:
    encoded = base64.b64encode(b"\0".join(a.encode() for a in GUIDE_ARGV) + b"\0").decode()
    assert parse_cmdline(encoded) == GUIDE_ARGV
    assert parse_cmdline("-") is None and parse_cmdline("") is None
    assert parse_strays([f"{CA_KEY_SHA} - {GUIDE_KEY_PATH}", "garbage"]) == {GUIDE_KEY_PATH: CA_KEY_SHA}
    assert parse_strays([f"{CA_KEY_SHA} pub:ab {GUIDE_KEY_PATH} x"]) == {
        f"{GUIDE_KEY_PATH} x": f"{CA_KEY_SHA} pub:ab"
    }
    sections = parse_observation(f"@cmdline\n{encoded}\n@dataowner\nforeign\n@strays\n@end\n")
    assert sections["dataowner"] == ["foreign"] and sections["strays"] == []


def test_a_rerun_after_daemon_reload_still_restarts_the_member_running_the_old_flags() -> None:
    # apply was interrupted after our files and unit were in place: systemd now names our unit, but the
    # process still runs with the guide's flags as root
    hosts = {n: host(n) for n in NAMES}
    hosts["etcd2"] = host("etcd2", unit_path=layout.UNIT, main_argv=GUIDE_ARGV, data_foreign_owned=True)
    plan = plan_apply(SPEC, desired(), hosts, cluster(leader="etcd1"), SYSTEM)
    assert ids(plan) == ["etcd2/restart"]
    restart = plan.steps[0].action
    assert isinstance(restart, RestartMember) and restart.before_start


def test_the_ca_key_in_another_encoding_is_recognised_and_removed(tmp_path: Path) -> None:
    """Security item 11: the guide's cfssl CA key is PKCS#1 or SEC 1; the workspace may hold PKCS#8. The
    real observe script (with openssl) and the control side agree on the key, not the bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from etcdforge.hosts import LocalHost
    from etcdforge.observe.hosts import observe_host
    from etcdforge.verbs.apply.run import ca_key_ids
    from etcdforge.workspace import Workspace

    need_interop_binaries("openssl")
    pem, none = serialization.Encoding.PEM, serialization.NoEncryption()
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ws = Workspace(tmp_path / "ws")
    ws.pki_dir.mkdir(parents=True)
    (ws.pki_dir / "ca-key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none))
    member = tmp_path / "member"
    member.mkdir()
    guide = key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none)
    (member / "etcd-ca-key.pem").write_bytes(guide)
    (member / "other-ca-key.pem").write_bytes(
        other.private_bytes(pem, serialization.PrivateFormat.PKCS8, none)
    )
    observation = observe_host(
        LocalHost(), "etcd1", (), dirs=(), data_dir="/var/lib/etcd-none", binary="/bin/false",
        hash_binary=False, stray_patterns=(f"{member}/*ca-key*.pem",),
    )  # fmt: skip
    seen = asyncio.run(observation)
    known = ca_key_ids(SPEC, ws)
    assert set(seen.strays[f"{member}/etcd-ca-key.pem"].split()) & known  # the same key, another encoding
    assert not set(seen.strays[f"{member}/other-ca-key.pem"].split()) & known
    hosts = {n: host(n) for n in NAMES}
    hosts["etcd1"] = replace(hosts["etcd1"], strays=dict(seen.strays))
    plan = plan_apply(SPEC, desired(), hosts, cluster(), SYSTEM, ca_key_ids=known)
    assert f"etcd1/remove:{member}/etcd-ca-key.pem" in ids(plan)
    assert f"etcd1/remove:{member}/other-ca-key.pem" not in ids(plan)
