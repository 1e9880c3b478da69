"""The Prometheus text parser and histogram quantiles behind ``metrics`` and ``doctor`` (checked against
prometheus_client's own parser and a hand-computed histogram_quantile)."""

from __future__ import annotations

import math

import pytest

from etcdforge import exposition

PAGE = """\
# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
etcd_server_version{server_version="3.5.1"} 1
etcd_server_leader_changes_seen_total 2
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 60
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 90
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.008"} 100
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 100
etcd_disk_wal_fsync_duration_seconds_sum 0.2
etcd_disk_wal_fsync_duration_seconds_count 100
etcd_network_peer_round_trip_time_seconds_bucket{To="a",le="0.001"} 5
etcd_network_peer_round_trip_time_seconds_bucket{To="a",le="0.002"} 10
etcd_network_peer_round_trip_time_seconds_bucket{To="a",le="+Inf"} 10
etcd_network_peer_round_trip_time_seconds_bucket{To="b",le="0.001"} 0
etcd_network_peer_round_trip_time_seconds_bucket{To="b",le="0.002"} 0
etcd_network_peer_round_trip_time_seconds_bucket{To="b",le="+Inf"} 10
weird{a="x\\"y",b="line\\nnext",c="back\\\\slash"} 3 1700000000000
process_max_fds 1024
process_open_fds 37
"""


def test_parse_matches_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    ours = {(s.name, s.labels, s.value) for s in exposition.parse(PAGE)}
    theirs = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in parser.text_string_to_metric_families(PAGE)
        for s in family.samples
    }
    assert {(n, tuple(sorted(lab)), v) for n, lab, v in ours} == theirs


def test_label_escapes_and_lookup() -> None:
    weird = next(s for s in exposition.parse(PAGE) if s.name == "weird")
    assert (weird.label("a"), weird.label("b"), weird.label("c")) == ('x"y', "line\nnext", "back\\slash")
    assert weird.label("missing") is None


def test_quantile_interpolates_like_prometheus() -> None:
    samples = exposition.parse(PAGE)
    # rank 99 of 100 lies in (0.004, 0.008] holding counts 90..100: 0.004 + 0.004 * 9/10
    assert exposition.histogram_quantile(samples, "etcd_disk_wal_fsync_duration_seconds", 0.99) == (
        pytest.approx(0.0076)
    )
    # the median: rank 50 in (0.001, 0.002] holding 10..60
    assert exposition.histogram_quantile(samples, "etcd_disk_wal_fsync_duration_seconds", 0.5) == (
        pytest.approx(0.0018)
    )
    # peers' buckets are summed; rank 19.8 of 20 falls into +Inf: the highest finite bound
    assert exposition.histogram_quantile(samples, "etcd_network_peer_round_trip_time_seconds", 0.99) == 0.002
    assert exposition.histogram_quantile(samples, "no_such", 0.99) is None
    assert exposition.quantile(0.99, [(math.inf, 0.0)]) is None


def test_figures() -> None:
    f = exposition.figures(exposition.parse(PAGE))
    assert (f.version, f.has_leader, f.leader_changes, f.open_fds, f.max_fds) == ("3.5.1", True, 2, 37, 1024)
    assert f.wal_fsync_p99 == pytest.approx(0.0076)
    assert f.backend_commit_p99 is None and f.is_learner is None


def test_exemplars_tabs_and_spaces_are_read() -> None:
    page = 'a_bucket{le="0.1"} 5 # {trace_id="x"} 0.05 1.6e9\nb\t7\nc{x = "1", y="2"} 3\n# EOF\n'
    assert [(s.name, s.labels, s.value) for s in exposition.parse(page)] == [
        ("a_bucket", (("le", "0.1"),), 5.0),
        ("b", (), 7.0),
        ("c", (("x", "1"), ("y", "2")), 3.0),
    ]


@pytest.mark.parametrize("line", ["no_value", "x{a=1} 2", 'x{a="1"} one', "x 1 2 3"])
def test_malformed_lines_are_refused(line: str) -> None:
    with pytest.raises(exposition.ExpositionError, match="line 1"):
        exposition.parse(line + "\n")
