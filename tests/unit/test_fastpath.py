"""The entry point's quick path for `status -o json`: which command lines take it, how the gateway's JSON
becomes the full path's rows, and the cache it trusts (keyed by the spec's bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdforge import statuscache
from etcdforge.fastpath import _row, quick_status, status_json_dir


@pytest.mark.parametrize(
    ("argv", "quick_path"),
    [
        (["status", "-o", "json"], True),
        (["status", "--output=json", "--dir", "D"], True),
        (["status", "-ojson", "--dir=D"], True),
        (["status"], False),
        (["status", "-o", "table"], False),
        (["status", "-o", "json", "--watch"], False),
        (["status", "-o", "json", "--help"], False),
        (["health", "-o", "json"], False),
        ([], False),
    ],
)
def test_only_a_plain_status_json_command_line_takes_the_quick_path(
    argv: list[str], quick_path: bool
) -> None:

    found = status_json_dir(argv)
    assert (found is not None) is quick_path
    if quick_path and "D" in " ".join(argv):
        assert found == Path("D")


def test_a_gateway_status_becomes_the_full_paths_row() -> None:
    gateway = {"header": {"cluster_id": "1", "member_id": "255", "revision": "7", "raft_term": "2"},
               "version": "3.5.1", "dbSize": "20480", "leader": "255", "raftIndex": "20", "raftTerm": "2",
               "raftAppliedIndex": "20", "dbSizeInUse": "16384"}  # fmt: skip
    row = _row("etcd1", "https://127.0.0.1:2379", gateway, 2 * 1024**3)
    assert row["id"] == "ff" and row["is_leader"] and row["leader"] == "ff"
    assert (row["db_size"], row["db_size_in_use"], row["fragmented_pct"]) == (20480, 16384, 20.0)
    assert (row["quota_used_pct"], row["is_learner"], row["errors"], row["alarms"]) == (0.0, False, [], [])
    assert row["revision"] == 7 and row["raft_term"] == 2
    learner = _row("etcd4", "u", {**gateway, "isLearner": True, "errors": ["x"], "dbSize": "0"}, 0)
    assert learner["is_learner"] and learner["errors"] == ["x"]
    assert learner["fragmented_pct"] is None and learner["quota_used_pct"] is None


def test_the_cache_holds_only_for_the_exact_spec_bytes(tmp_path: Path) -> None:
    inputs = statuscache.StatusInputs((("etcd1", "https://127.0.0.1:2379"),), 100)
    statuscache.remember(tmp_path, b"spec", inputs)
    assert statuscache.recall(tmp_path, b"spec") == inputs
    assert statuscache.recall(tmp_path, b"spec ") is None
    (tmp_path / statuscache.CACHE_FILE).write_text("{not json")
    assert statuscache.recall(tmp_path, b"spec") is None
    # no workspace, no cache, a rotation in flight: the full path answers
    assert quick_status(tmp_path / "none") is None
    (tmp_path / "cluster.yaml").write_bytes(b"spec")
    statuscache.remember(tmp_path, b"spec", inputs)
    (tmp_path / "pki" / "rotation").mkdir(parents=True)
    assert quick_status(tmp_path) is None


def test_a_chunked_gateway_answer_is_read_whole() -> None:
    from etcdforge.fastpath import _unchunk

    assert _unchunk(b'3\r\n{"a\r\n4;ext=1\r\n": 1\r\n1\r\n}\r\n0\r\n\r\n') == b'{"a": 1}'
