"""The reliability checkers on synthetic histories: each passes on a correct history and fails on one
that breaks its invariant (so none is vacuous). Pure: no cluster, no sleeps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from etcdforge.errors import EtcdUnavailable
from etcdforge.etcd import HashKV, Health, Member, MemberStatus
from etcdforge.testing.checkers import (
    Event,
    KvHistory,
    SpecMember,
    check_at_most_once,
    check_distinct_revisions,
    check_history_against,
    check_no_lost_write,
    check_no_phantom,
    check_real_time_order,
    check_sentinel,
    check_throughput,
    convergence_problems,
    tool_view_problems,
)
from etcdforge.testing.workload import Op, Outcome, dump_history, load_history


def put(c: int, key: str, value: str, rev: int, t0: float, t1: float, outcome: Outcome = "ok") -> Op:
    return Op(c, key, value, outcome, rev if outcome == "ok" else 0, t0, t1, kind="put")


def get(c: int, key: str, read: str, mod: int, rev: int, t0: float, t1: float) -> Op:
    return Op(c, key, "", "ok", rev, t0, t1, kind="get", value_read=read, mod_revision=mod)


# A correct history: start at revision 1 (empty), then
#   rev 2 put k0=c0-0, rev 3 put k1=c1-0, rev 4 delete k0, rev 5 cas k1=c1-2 (unknown outcome),
#   rev 6 sentinel.
HISTORY = [
    put(0, "/w/k0", "c0-0", 2, 0.0, 1.0),
    put(1, "/w/k1", "c1-0", 3, 0.5, 1.5),
    get(0, "/w/k1", "c1-0", 3, 3, 2.0, 2.1),
    Op(0, "/w/k0", "", "ok", 0, 2.2, 2.5, kind="delete", deleted=1),
    Op(1, "/w/k1", "c1-1", "ok", 4, 2.3, 2.4, kind="cas", expected=2, succeeded=False, mod_revision=3),
    Op(1, "/w/k1", "c1-2", "unknown", 0, 2.6, 4.0, kind="cas", expected=3),
    Op(0, "/w/k0", "", "ok", 4, 2.6, 2.7, kind="sget", value_read="", mod_revision=0),
    get(0, "/w/k1", "c1-2", 5, 5, 4.1, 4.2),
    put(2, "/w/sentinel", "sentinel-0", 6, 5.0, 5.1),
]
KV = KvHistory(
    start=1,
    end=6,
    initial={},
    events=(
        Event(2, "/w/k0", "c0-0"),
        Event(3, "/w/k1", "c1-0"),
        Event(4, "/w/k0", None),
        Event(5, "/w/k1", "c1-2"),
        Event(6, "/w/sentinel", "sentinel-0"),
    ),
)


def with_events(*events: Event) -> KvHistory:
    return replace(KV, events=tuple(sorted(events, key=lambda e: e.revision)))


def test_a_correct_history_passes_every_checker() -> None:
    results = check_history_against(HISTORY, KV)
    assert all(not v for v in results.values()), results


def test_c1_catches_a_lost_acknowledged_write() -> None:
    lost = with_events(*(e for e in KV.events if e.value != "c1-0"))
    problems = check_no_lost_write(HISTORY, lost)
    assert any(p.startswith("C1:") and "c1-0" in p for p in problems), problems


def test_c1_catches_a_lost_acknowledged_delete() -> None:
    lost = with_events(*(e for e in KV.events if e.value is not None))
    problems = check_no_lost_write(HISTORY, lost)
    assert any("delete of /w/k0" in p for p in problems), problems


def test_c1_catches_a_write_of_another_value_at_the_acknowledged_revision() -> None:
    other = with_events(*(e if e.revision != 2 else Event(2, "/w/k0", "c9-9") for e in KV.events))
    assert check_no_lost_write(HISTORY, other)


def test_c2_catches_a_phantom_write_and_a_failed_write_that_applied() -> None:
    phantom = with_events(*KV.events, Event(7, "/w/k2", "nobody-wrote-this"))
    assert any("nobody-wrote-this" in p for p in check_no_phantom(HISTORY, phantom))
    failed = [*HISTORY, put(1, "/w/k2", "c1-9", 0, 6.0, 6.1, outcome="fail")]
    applied = with_events(*KV.events, Event(7, "/w/k2", "c1-9"))
    assert any(p.startswith("C2:") for p in check_no_phantom(failed, applied))
    assert not check_no_phantom([*HISTORY, replace(failed[-1], outcome="unknown")], applied)


def test_c2_catches_a_phantom_delete() -> None:
    extra = with_events(*KV.events, Event(7, "/w/k1", None))
    assert any("deleted 2 times" in p or "/w/k1 was deleted" in p for p in check_no_phantom(HISTORY, extra))


def test_c3_catches_an_indeterminate_write_applied_twice() -> None:
    twice = with_events(*KV.events, Event(7, "/w/k1", "c1-2"))
    problems = check_at_most_once(HISTORY, twice)
    assert problems and "unknown write 'c1-2' was applied 2 times" in problems[0], problems


def test_c4_catches_a_stale_read_after_a_completed_write() -> None:
    # get of k1 invoked after the put at revision 3 returned, yet it read nothing at revision 3
    stale = [*HISTORY, get(0, "/w/k1", "", 0, 3, 1.6, 1.7)]
    problems = check_real_time_order(stale, KV)
    assert any("stale read" in p for p in problems), problems


def test_c4_catches_a_read_with_an_old_header_after_a_write() -> None:
    stale = [*HISTORY, get(0, "/w/k0", "", 0, 1, 1.2, 1.3)]
    problems = check_real_time_order(stale, KV)
    assert any("has revision 1" in p for p in problems), problems


def test_c4_catches_a_revision_going_backwards_between_writes() -> None:
    backwards = [
        put(0, "/w/k0", "c0-0", 3, 0.0, 1.0),
        put(1, "/w/k1", "c1-0", 2, 1.5, 2.0),  # invoked after the first returned, yet an earlier revision
    ]
    kv = with_events(Event(2, "/w/k1", "c1-0"), Event(3, "/w/k0", "c0-0"))
    problems = check_real_time_order(backwards, kv)
    assert any(p.startswith("C4:") and "revision 2" in p for p in problems), problems
    # concurrent ops may commit in either order
    overlapping = [backwards[0], replace(backwards[1], invoked=0.5)]
    assert not check_real_time_order(overlapping, kv)


def test_c4_catches_a_read_that_disagrees_with_the_stored_history() -> None:
    wrong = [*HISTORY, Op(0, "/w/k1", "", "ok", 3, 6.0, 6.1, kind="sget", value_read="c1-9", mod_revision=3)]
    assert any("the history has 'c1-0'@3" in p for p in check_real_time_order(wrong, KV))


def test_c5_catches_two_writes_with_one_revision() -> None:
    dup = [*HISTORY, put(1, "/w/k2", "c1-7", 3, 6.0, 6.1)]
    problems = check_distinct_revisions(dup)
    assert problems == ["C5: 'c1-7' and 'c1-0' share revision 3"]
    assert not check_distinct_revisions(HISTORY)


def test_sentinel_and_throughput() -> None:
    assert not check_sentinel(HISTORY)
    assert check_sentinel([*HISTORY[:-1], replace(HISTORY[-1], outcome="unknown", revision=0)])
    assert check_sentinel(HISTORY[:-1])
    assert not check_throughput(HISTORY, start=0.0, until=3.0, floor=1.0)
    assert check_throughput(HISTORY, start=0.0, until=3.0, floor=100.0)[0].startswith("inconclusive")


def test_history_round_trips_through_json_lines(tmp_path: Path) -> None:
    path = dump_history(HISTORY, tmp_path / "report" / "history.jsonl")
    assert load_history(path) == HISTORY
    assert len(path.read_text().splitlines()) == len(HISTORY)


# -- C6 ------------------------------------------------------------------------------------------------

EPS = ("https://127.0.0.1:2379", "https://127.0.0.2:2379", "https://127.0.0.3:2379")
MEMBERS = tuple(
    Member(i + 1, f"etcd{i + 1}", (f"https://127.0.0.{i + 1}:2380",), (ep,), False)
    for i, ep in enumerate(EPS)
)


def status(i: int, leader: int = 1, revision: int = 10) -> MemberStatus:
    return MemberStatus(EPS[i], i + 1, 7, "3.5.1", 1, 1, leader, 2, 20, 20, False, (), revision)


def converged() -> tuple[list[Health], list[MemberStatus], dict[str, tuple[Member, ...]], list[HashKV]]:
    return (
        [Health(ep, True, 0.01, None) for ep in EPS],
        [status(i) for i in range(3)],
        {ep: MEMBERS for ep in EPS},
        [HashKV(ep, i + 1, 1234, 0, 10) for i, ep in enumerate(EPS)],
    )


def test_c6_passes_on_a_converged_cluster() -> None:
    assert convergence_problems(*converged()) == []


def test_c6_catches_each_kind_of_divergence() -> None:
    healths, statuses, lists, hashes = converged()
    sick = [Health(EPS[0], False, 1.0, "no leader"), *healths[1:]]
    assert any("unhealthy" in p for p in convergence_problems(sick, statuses, lists, hashes))
    two = [status(0, leader=1), status(1, leader=2), status(2, leader=1)]
    assert any("2 members say" in p for p in convergence_problems(healths, two, lists, hashes))
    down: list[MemberStatus | EtcdUnavailable] = [*statuses[:2], EtcdUnavailable("refused")]
    assert any("status failed" in p for p in convergence_problems(healths, down, lists, hashes))
    differ = {**lists, EPS[2]: MEMBERS[:2]}
    assert any("different member lists" in p for p in convergence_problems(healths, statuses, differ, hashes))
    forked = [*hashes[:2], HashKV(EPS[2], 3, 999, 0, 10)]
    assert any("HashKV differs" in p for p in convergence_problems(healths, statuses, lists, forked))


# -- C9 ------------------------------------------------------------------------------------------------


def tool_rows() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    members = [
        {
            "id": f"{m.id:x}",
            "name": m.name,
            "peer_urls": list(m.peer_urls),
            "client_urls": list(m.client_urls),
            "is_learner": m.is_learner,
        }
        for m in MEMBERS
    ]
    statuses: list[dict[str, object]] = [
        {"member": f"etcd{i + 1}", "endpoint": EPS[i], "error": None, "id": f"{i + 1:x}", "version": "3.5.1"}
        | {"is_learner": False}
        for i in range(3)
    ]
    return members, statuses


SPEC = [SpecMember(m.name, m.peer_urls[0], m.client_urls[0]) for m in MEMBERS]
STATUSES = [status(i) for i in range(3)]


def test_c9_passes_when_tool_spec_and_cluster_agree() -> None:
    members, statuses = tool_rows()
    assert tool_view_problems(SPEC, members, statuses, MEMBERS, STATUSES) == []


def test_c9_catches_disagreements() -> None:
    members, statuses = tool_rows()
    members[1]["is_learner"] = True
    assert any("member 2" in p for p in tool_view_problems(SPEC, members, statuses, MEMBERS, STATUSES))
    members, statuses = tool_rows()
    statuses[2]["version"] = "3.4.23"
    assert any("3.4.23" in p for p in tool_view_problems(SPEC, members, statuses, MEMBERS, STATUSES))
    members, statuses = tool_rows()
    assert any("ids" in p for p in tool_view_problems(SPEC, members[:2], statuses, MEMBERS, STATUSES))
    moved = [*SPEC[:2], SpecMember("etcd3", "https://127.0.0.9:2380", SPEC[2].client_url)]
    members, statuses = tool_rows()
    assert any("spec peer URL" in p for p in tool_view_problems(moved, members, statuses, MEMBERS, STATUSES))
    renamed = [*SPEC[:2], SpecMember("etcd4", SPEC[2].peer_url, SPEC[2].client_url)]
    assert any("spec members" in p for p in tool_view_problems(renamed, members, statuses, MEMBERS, STATUSES))


def test_c9_certificates_each_endpoint_presents_what_the_pki_records() -> None:
    from etcdforge.testing.checkers import CertFacts, cert_view_problems

    want = {"https://a:2379": CertFacts(0xA1, "2027-01-01T00:00:00+00:00"),
            "https://a:2380": CertFacts(0xA2, "2027-01-01T00:00:00+00:00")}  # fmt: skip
    assert cert_view_problems(want, dict(want)) == []
    stale = {**want, "https://a:2380": CertFacts(0x99, "2026-12-01T00:00:00+00:00")}
    assert cert_view_problems(want, stale) == [
        "C9: https://a:2380 presents serial 99 (until 2026-12-01T00:00:00+00:00); the tool's PKI has a2 "
        "(until 2027-01-01T00:00:00+00:00)"
    ]
    down = {"https://a:2379": "refused"}
    problems = cert_view_problems(want, down)
    assert problems == [
        "C9: https://a:2379: could not read the presented certificate: refused",
        "C9: https://a:2380: could not read the presented certificate: not probed",
    ]
