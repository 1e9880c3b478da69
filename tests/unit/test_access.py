"""Clients and access (pure): the spec's clients, the users and roles it wants, the steps that make etcd
match, the client add/remove plans, the access actions against a fake auth store, the config outputs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from etcdforge.access import EMPTY, ROOT, AuthView, access_steps, permissions, wanted, without_access
from etcdforge.clientconfig import CONSUMERS, ClientTarget, render_config
from etcdforge.errors import PlanError, SpecError
from etcdforge.etcd import EtcdServerError, Permission
from etcdforge.etcd.types import prefix_end
from etcdforge.plan import EnsureRole, EnsureUser, SetAuth, permission_text
from etcdforge.render import ClientPaths
from etcdforge.runtime import access_ops
from etcdforge.spec import ClientSpec, ClusterSpec, parse_spec
from etcdforge.verbs.client.plan import CertFacts, parse_revoked, plan_add, plan_remove


def spec(**extra: Any) -> ClusterSpec:
    base: dict[str, Any] = {
        "name": "c",
        "token": "t",
        "members": [{"name": f"etcd{i}", "address": f"127.0.0.{i}"} for i in (1, 2, 3)],
    }
    return parse_spec({**base, **extra})


APP = {"name": "billing", "access": [{"prefix": "/billing/"}, {"prefix": "/shared/", "mode": "read"}]}
OPS = {"name": "ops", "root": True}
RW = Permission("readwrite", b"/billing/", b"/billing0")
RO = Permission("read", b"/shared/", b"/shared0")


def test_prefix_end_is_etcds_and_permissions_read_back() -> None:
    assert prefix_end(b"/app/") == b"/app0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert permission_text(RW) == "readwrite /billing/*"
    assert permission_text(Permission("read", b"/k", b"")) == "read /k"
    assert permissions(ClientSpec.model_validate(APP)) == (RO, RW) or set(
        permissions(ClientSpec.model_validate(APP))
    ) == {RO, RW}


@pytest.mark.parametrize(
    ("client", "problem"),
    [
        ({"name": "root", "root": True}, "reserved"),
        ({"name": "admin", "root": True}, "reserved"),
        ({"name": "x"}, "no access rules"),
        ({"name": "x", "root": True, "access": [{"prefix": "/a/"}]}, "either root"),
        ({"name": "x", "access": [{"prefix": "/a/"}, {"prefix": "/a/", "mode": "read"}]}, "twice"),
        ({"name": "x", "access": [{"prefix": ""}]}, "prefix"),
        ({"name": "Bad_Name", "root": True}, "lower-case"),
        ({"name": "x", "access": [{"prefix": "/a/"}], "expiry": "soon"}, "expiry"),
    ],
)
def test_bad_clients_are_refused_with_the_field(client: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError) as e:
        spec(clients=[client])
    assert problem in " ".join(e.value.problems)


def test_two_clients_of_one_name_are_refused() -> None:
    with pytest.raises(SpecError) as e:
        spec(clients=[OPS, OPS])
    assert "used by two clients" in " ".join(e.value.problems)


def test_the_spec_wants_root_admin_and_a_role_per_application() -> None:
    s = spec(clients=[APP, OPS], auth={"enabled": True})
    w = wanted(s)
    assert w.users == {ROOT: (ROOT,), "admin": (ROOT,), "billing": ("billing",), "ops": (ROOT,)}
    assert set(w.roles) == {"billing"} and set(w.roles["billing"]) == {RW, RO}
    # the application clients get certificates like pki.clients
    from etcdforge.certs import cert_requests

    names = {r.cn for r in cert_requests(s) if r.profile == "client"}
    assert names == {"admin", "billing", "ops"}


def test_a_spec_without_clients_or_auth_leaves_etcds_auth_alone() -> None:
    hand_made = AuthView(True, {"root": ("root",), "someone": ("r",)}, {"r": (RW,)})
    assert access_steps(spec(), hand_made) == ([], [])
    assert access_steps(spec(), None) == ([], [])


def test_turning_auth_on_creates_users_first_and_names_who_loses_access() -> None:
    s = spec(clients=[APP], auth={"enabled": True}, pki={"clients": ["admin", "legacy"]})
    steps, warnings = access_steps(s, EMPTY)
    ids = [st.id for st in steps]
    assert ids == [
        "auth/role:billing",
        "auth/user:root",
        "auth/user:admin",
        "auth/user:billing",
        "auth/enable",
    ]
    enable = steps[-1].action
    assert isinstance(enable, SetAuth) and enable.enabled and enable.admins == ("admin",)
    assert without_access(s) == ("legacy",)
    assert any("legacy" in w and "refused" in w for w in warnings)


def test_a_converged_cluster_plans_nothing_and_a_hand_edit_is_repaired() -> None:
    s = spec(clients=[APP], auth={"enabled": True})
    good = AuthView(
        True, {"root": ("root",), "admin": ("root",), "billing": ("billing",)}, {"billing": (RO, RW)}
    )
    assert access_steps(s, good) == ([], [])
    edited = AuthView(
        True,
        {"root": ("root",), "admin": ("root",), "billing": ("billing", "root"), "stranger": ()},
        {"billing": (RW, Permission("readwrite", b"/", b"\0")), "stale": ()},
    )
    steps, _ = access_steps(s, edited)
    by_id = {st.id: st for st in steps}
    assert set(by_id) == {
        "auth/role:billing",
        "auth/user:billing",
        "auth/delete-user:stranger",
        "auth/delete-role:stale",
    }
    assert "+read /shared/*" in by_id["auth/role:billing"].reason
    assert "-readwrite >=/" in by_id["auth/role:billing"].reason
    assert isinstance(by_id["auth/user:billing"].action, EnsureUser)


def test_auth_off_in_the_spec_turns_it_off_first() -> None:
    s = spec(clients=[APP])
    on = AuthView(
        True, {"root": ("root",), "admin": ("root",), "billing": ("billing",)}, {"billing": (RO, RW)}
    )
    steps, warnings = access_steps(s, on)
    assert [st.id for st in steps] == ["auth/disable"] and warnings


def test_an_unread_cluster_gets_ensure_steps() -> None:
    steps, _ = access_steps(spec(clients=[OPS], auth={"enabled": True}), None)
    assert [st.id for st in steps] == ["auth/user:root", "auth/user:admin", "auth/user:ops", "auth/enable"]
    assert all(st.reason.startswith(("ensure", "auth.enabled")) for st in steps)


def test_client_add_plans_the_certificate_the_user_then_the_spec_and_refuses_other_rules() -> None:
    s = spec(auth={"enabled": True})
    new = ClientSpec.model_validate(APP)
    on = AuthView(True, {"root": ("root",), "admin": ("root",)}, {})
    plan, new_spec = plan_add(
        s, new, spec_path="/w/cluster.yaml", issue=(("client-billing", "new"),), pki_plan=None, auth=on
    )
    assert [st.id for st in plan.steps] == [
        "pki/issue",
        "auth/role:billing",
        "auth/user:billing",
        "workspace/write-spec",
    ]
    assert new_spec.client("billing") == new
    # the same add again (a re-run after a kill) converges; other rules for the name are refused
    again, _ = plan_add(new_spec, new, spec_path="x", issue=(), pki_plan=None, auth=on)
    assert [st.id for st in again.steps] == ["auth/role:billing", "auth/user:billing"]
    other = ClientSpec.model_validate({"name": "billing", "root": True})
    with pytest.raises(PlanError, match="other rules"):
        plan_add(new_spec, other, spec_path="x", issue=(), pki_plan=None, auth=on)
    down, _ = plan_add(s, new, spec_path="x", issue=(), pki_plan=None, auth=None)
    assert [st.id for st in down.steps] == ["workspace/write-spec"] and "does not answer" in down.warnings[0]


def _cert(serial: str | None = "1f") -> CertFacts:
    return CertFacts(
        "/w/pki/client-billing.pem",
        "/w/pki/client-billing-key.pem",
        serial,
        "2027-01-01T00:00:00Z",
        serial is not None,
    )


NOW = datetime(2026, 12, 2, tzinfo=UTC)


def test_client_remove_records_and_drops_it_from_the_spec_first_then_deletes_the_user() -> None:
    s = spec(clients=[APP], auth={"enabled": True})
    on = AuthView(
        True, {"root": ("root",), "admin": ("root",), "billing": ("billing",)}, {"billing": (RO, RW)}
    )
    kw: dict[str, Any] = {"spec_path": "/w/cluster.yaml", "revoked_path": "/w/pki/revoked.json", "now": NOW}
    plan, new_spec = plan_remove(s, "billing", revoked_text=None, cert=_cert(), auth=on, **kw)
    ids = [st.id for st in plan.steps]
    assert ids == [  # from the spec write on, every convergence (up, apply) deletes the user too
        "pki/revoke:billing", "workspace/write-spec", "auth/delete-user:billing", "auth/delete-role:billing",
        "pki/remove-cert:billing", "pki/remove-key:billing",
    ]  # fmt: skip
    assert new_spec.client("billing") is None and not plan.warnings
    record = plan.steps[0].action
    revoked = parse_revoked(record.content.decode())  # type: ignore[union-attr]
    assert revoked[0].serial == "1f" and revoked[0].name == "billing"
    # after everything: the name is only in the revoked record -> nothing to do, no error
    gone = AuthView(True, {"root": ("root",), "admin": ("root",)}, {})
    done_text = json.dumps({"revoked": [r.to_json() for r in revoked]})
    done, _ = plan_remove(new_spec, "billing", revoked_text=done_text, cert=_cert(None), auth=gone, **kw)
    assert done.empty
    # killed after the certificate went but before the key (an every-point run found it): the re-run
    # removes the key
    key_left = CertFacts(_cert().cert_path, _cert().key_path, None, None, True)
    left, _ = plan_remove(new_spec, "billing", revoked_text=done_text, cert=key_left, auth=gone, **kw)
    assert [st.id for st in left.steps] == ["pki/remove-key:billing"]
    with pytest.raises(PlanError, match="no client named"):
        plan_remove(new_spec, "nobody", revoked_text=None, cert=_cert(None), auth=gone, **kw)
    with pytest.raises(PlanError, match="does not answer"):
        plan_remove(s, "billing", revoked_text=None, cert=_cert(), auth=None, **kw)
    with pytest.raises(PlanError, match="etcdforge's own"):
        plan_remove(s, "admin", revoked_text=None, cert=_cert(), auth=on, **kw)
    off = AuthView(False, on.users, on.roles)
    warned, _ = plan_remove(s, "billing", revoked_text=None, cert=_cert(), auth=off, **kw)
    assert "keeps full access" in warned.warnings[0]


class FakeAuth:
    """etcd's auth store as far as the access actions use it (our own port, AuthPort)."""

    def __init__(self) -> None:
        self.enabled = False
        self.users: dict[str, set[str]] = {}
        self.roles: dict[str, dict[tuple[bytes, bytes], str]] = {}

    def _missing(self, what: str) -> EtcdServerError:
        return EtcdServerError(
            f"etcdserver: {what} name not found",
            code="FAILED_PRECONDITION",
            reason=f"{what}_not_found",
            endpoint=None,
        )  # type: ignore[arg-type]

    async def auth_status(self) -> Any:
        from etcdforge.etcd import AuthStatus

        return AuthStatus(enabled=self.enabled)

    async def auth_enable(self) -> None:
        if ROOT not in self.users.get(ROOT, set()):
            raise EtcdServerError(
                "etcdserver: root user does not exist",
                code="FAILED_PRECONDITION",
                reason="root_user_not_exist",
                endpoint=None,
            )
        self.enabled = True

    async def auth_disable(self) -> None:
        self.enabled = False

    async def user_add(self, name: str) -> None:
        self.users[name] = set()

    async def user_get(self, name: str) -> tuple[str, ...]:
        if name not in self.users:
            raise self._missing("user")
        return tuple(sorted(self.users[name]))

    async def user_list(self) -> tuple[str, ...]:
        return tuple(sorted(self.users))

    async def user_delete(self, name: str) -> None:
        if self.users.pop(name, None) is None:
            raise self._missing("user")

    async def user_grant_role(self, user: str, role: str) -> None:
        self.users[user].add(role)

    async def user_revoke_role(self, user: str, role: str) -> None:
        self.users[user].discard(role)

    async def role_add(self, name: str) -> None:
        self.roles[name] = {}

    async def role_get(self, name: str) -> tuple[Permission, ...]:
        if name not in self.roles:
            raise self._missing("role")
        return tuple(Permission(k, key, end) for (key, end), k in self.roles[name].items())  # type: ignore[arg-type]

    async def role_list(self) -> tuple[str, ...]:
        return tuple(sorted(self.roles))

    async def role_delete(self, name: str) -> None:
        if self.roles.pop(name, None) is None:
            raise self._missing("role")

    async def role_grant_permission(self, role: str, permission: Permission) -> None:
        self.roles[role][(permission.key, permission.range_end)] = permission.kind

    async def role_revoke_permission(self, role: str, key: bytes, range_end: bytes) -> None:
        self.roles[role].pop((key, range_end))

    async def member_list(self, linearizable: bool = True, *, endpoint: str | None = None) -> tuple[Any, ...]:
        return ()


def test_access_actions_converge_repair_and_never_lock_etcdforge_out() -> None:
    from etcdforge.observe.auth import observe_auth

    fake = FakeAuth()
    s = spec(clients=[APP], auth={"enabled": True})

    async def run(steps: list[Any]) -> list[str]:
        return [await access_ops.perform(fake, st.action) for st in steps]

    # turning auth on before root holds the root role is refused by us, not by etcd
    with pytest.raises(PlanError, match="lock etcdforge out"):
        asyncio.run(access_ops.perform(fake, SetAuth(True, ("admin",))))
    steps, _ = access_steps(s, asyncio.run(observe_auth(fake)))
    notes = asyncio.run(run(steps))
    assert fake.enabled and fake.users["admin"] == {ROOT} and notes[-1].startswith("on")
    assert access_steps(s, asyncio.run(observe_auth(fake))) == ([], [])
    # a hand edit: write on the read-only prefix, an extra range; the ensure step repairs both
    fake.roles["billing"][(b"/shared/", b"/shared0")] = "readwrite"
    fake.roles["billing"][(b"/", b"\0")] = "read"
    steps, _ = access_steps(s, asyncio.run(observe_auth(fake)))
    assert [st.id for st in steps] == ["auth/role:billing"]
    assert asyncio.run(run(steps))[0].startswith("repaired")
    assert access_steps(s, asyncio.run(observe_auth(fake))) == ([], [])
    # every action again is a no-op
    again = [
        EnsureRole("billing", permissions(s.clients[0])),
        EnsureUser("billing", ("billing",)),
        SetAuth(True, ("admin",)),
    ]
    assert [asyncio.run(access_ops.perform(fake, a)) for a in again] == [
        "already as wanted",
        "already as wanted",
        "already on",
    ]


def _target(prefix: str | None = "/billing/") -> ClientTarget:
    paths = ClientPaths(
        ca_cert="/w/pki/ca.pem", cert="/w/pki/client-billing.pem", key="/w/pki/client-billing-key.pem"
    )
    return ClientTarget(("https://127.0.0.1:2379", "https://127.0.0.2:2379"), paths, prefix)


def test_each_consumer_gets_its_own_format_with_the_paths() -> None:
    t = _target()
    for consumer in CONSUMERS:
        text = render_config(consumer, t)
        assert "/w/pki/client-billing.pem" in text and "/w/pki/client-billing-key.pem" in text, consumer
    patroni = yaml.safe_load(render_config("patroni", t))
    assert (
        patroni["etcd3"]["hosts"] == ["127.0.0.1:2379", "127.0.0.2:2379"]
        and patroni["etcd3"]["protocol"] == "https"
    )
    assert patroni["etcd3"]["cacert"] == "/w/pki/ca.pem" and patroni["namespace"] == "/billing/"
    apisix = yaml.safe_load(render_config("apisix", t))
    assert apisix["deployment"]["etcd"]["host"][0] == "https://127.0.0.1:2379"
    assert (
        apisix["deployment"]["etcd"]["tls"]["verify"] is True
        and apisix["deployment"]["etcd"]["prefix"] == "/billing"
    )
    assert apisix["apisix"]["ssl"]["ssl_trusted_certificate"] == "/w/pki/ca.pem"
    kube = render_config("kube-apiserver", t).split()
    assert "--etcd-servers=https://127.0.0.1:2379,https://127.0.0.2:2379" in kube
    assert "--etcd-prefix=/billing" in kube and "--etcd-cafile=/w/pki/ca.pem" in kube
    core = render_config("coredns", t)
    assert "tls /w/pki/client-billing.pem /w/pki/client-billing-key.pem /w/pki/ca.pem" in core
    assert "path /billing" in core
    compile(render_config("python", t), "<snippet>", "exec")
    assert "--etcd-prefix" not in render_config("kube-apiserver", _target(None))


def test_a_revoked_name_still_valid_is_refused_everywhere() -> None:
    from etcdforge.access import Revoked, refuse_revoked, revoked_names

    entries = [
        Revoked("billing", "1f", "2027-01-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        Revoked("old", "2e", "2026-01-01T00:00:00Z", "2025-12-01T00:00:00Z"),  # expired since
    ]
    live = revoked_names(entries, NOW)
    assert live == {"billing"}
    s = spec(clients=[APP], auth={"enabled": True})
    with pytest.raises(PlanError, match="let them in again"):
        access_steps(s, EMPTY, live)  # up / apply
    with pytest.raises(PlanError, match="let them in again"):
        plan_add(
            spec(),
            ClientSpec.model_validate(APP),
            spec_path="x",
            issue=(),
            pki_plan=None,
            auth=EMPTY,
            revoked=live,
        )
    refuse_revoked(spec(clients=[{"name": "old", "root": True}]), live)  # an expired one may come back


def test_names_that_would_be_etcd_root_or_share_a_user_are_refused() -> None:
    for extra, problem in (
        ({"pki": {"clients": ["admin", "root"]}}, "root user"),
        ({"pki": {"clients": ["admin", "etcd1"]}}, "member"),
        ({"clients": [{"name": "etcd2", "root": True}]}, "member's name"),
    ):
        with pytest.raises(SpecError) as e:
            spec(**extra)
        assert problem in " ".join(e.value.problems), extra
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "c", "token": "t", "members": [{"name": "admin", "address": "127.0.0.1"}]})
    assert "reserved" in " ".join(e.value.problems)


def test_client_add_takes_over_an_unmanaged_cluster_without_deleting_or_switching_anything() -> None:
    new = ClientSpec.model_validate(APP)
    theirs = AuthView(True, {"root": ("root",), "admin": ("root",), "kube": ("kube",)}, {"kube": (RW,)})
    with pytest.raises(PlanError, match=r"users this spec does not list \(kube\)"):
        plan_add(spec(), new, spec_path="x", issue=(), pki_plan=None, auth=theirs)
    on = AuthView(True, {"root": ("root",), "admin": ("root",)}, {})
    plan, new_spec = plan_add(spec(), new, spec_path="x", issue=(), pki_plan=None, auth=on)
    assert new_spec.auth.enabled is True and "auth/disable" not in [st.id for st in plan.steps]


def test_auth_off_in_the_spec_is_ensured_when_etcd_could_not_be_read() -> None:
    steps, warnings = access_steps(spec(clients=[OPS], auth={"enabled": False}), None)
    assert steps[0].id == "auth/disable" and steps[0].reason.startswith("ensure") and not warnings
    # unset and no clients: etcd's auth is left alone; an explicit false is managed
    assert access_steps(spec(), None) == ([], [])
    assert next(st.id for st in access_steps(spec(auth={"enabled": False}), None)[0]) == "auth/disable"


def test_removing_the_last_client_keeps_the_spec_managing_auth() -> None:
    s = spec(clients=[OPS])
    on = AuthView(True, {"root": ("root",), "admin": ("root",), "ops": ("root",)}, {})
    kw: dict[str, Any] = {"spec_path": "/w/cluster.yaml", "revoked_path": "/w/r.json", "now": NOW}
    _, new_spec = plan_remove(s, "ops", revoked_text=None, cert=_cert(), auth=on, **kw)
    assert new_spec.clients == () and new_spec.auth.enabled is True
