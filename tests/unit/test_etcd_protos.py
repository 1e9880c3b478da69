"""Our own .proto subset must be wire-identical to etcd: field numbers, types, enum values, RPC paths.

Expected numbers are etcd's (api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto), written out here as facts.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from etcdforge.etcd._gen import cluster_pb2, common_pb2, kv_pb2, maintenance_pb2
from etcdforge.etcd._rpc import prefix_end

FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "ResponseHeader": {
        "cluster_id": (1, F.TYPE_UINT64),
        "member_id": (2, F.TYPE_UINT64),
        "revision": (3, F.TYPE_INT64),
        "raft_term": (4, F.TYPE_UINT64),
    },
    "KeyValue": {
        "key": (1, F.TYPE_BYTES),
        "create_revision": (2, F.TYPE_INT64),
        "mod_revision": (3, F.TYPE_INT64),
        "version": (4, F.TYPE_INT64),
        "value": (5, F.TYPE_BYTES),
        "lease": (6, F.TYPE_INT64),
    },
    "RangeRequest": {
        "key": (1, F.TYPE_BYTES),
        "range_end": (2, F.TYPE_BYTES),
        "limit": (3, F.TYPE_INT64),
        "revision": (4, F.TYPE_INT64),
        "sort_order": (5, F.TYPE_ENUM),
        "sort_target": (6, F.TYPE_ENUM),
        "serializable": (7, F.TYPE_BOOL),
        "keys_only": (8, F.TYPE_BOOL),
        "count_only": (9, F.TYPE_BOOL),
    },
    "RangeResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "kvs": (2, F.TYPE_MESSAGE),
        "more": (3, F.TYPE_BOOL),
        "count": (4, F.TYPE_INT64),
    },
    "DeleteRangeResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "deleted": (2, F.TYPE_INT64),
        "prev_kvs": (3, F.TYPE_MESSAGE),
    },
    "Compare": {
        "result": (1, F.TYPE_ENUM),
        "target": (2, F.TYPE_ENUM),
        "key": (3, F.TYPE_BYTES),
        "version": (4, F.TYPE_INT64),
        "create_revision": (5, F.TYPE_INT64),
        "mod_revision": (6, F.TYPE_INT64),
        "value": (7, F.TYPE_BYTES),
        "lease": (8, F.TYPE_INT64),
        "range_end": (64, F.TYPE_BYTES),
    },
    "TxnRequest": {
        "compare": (1, F.TYPE_MESSAGE),
        "success": (2, F.TYPE_MESSAGE),
        "failure": (3, F.TYPE_MESSAGE),
    },
    "TxnResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "succeeded": (2, F.TYPE_BOOL),
        "responses": (3, F.TYPE_MESSAGE),
    },
    "Member": {
        "ID": (1, F.TYPE_UINT64),
        "name": (2, F.TYPE_STRING),
        "peerURLs": (3, F.TYPE_STRING),
        "clientURLs": (4, F.TYPE_STRING),
        "isLearner": (5, F.TYPE_BOOL),
    },
    "MemberAddRequest": {"peerURLs": (1, F.TYPE_STRING), "isLearner": (2, F.TYPE_BOOL)},
    "MemberAddResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "member": (2, F.TYPE_MESSAGE),
        "members": (3, F.TYPE_MESSAGE),
    },
    "MemberListRequest": {"linearizable": (1, F.TYPE_BOOL)},
    "StatusResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "version": (2, F.TYPE_STRING),
        "dbSize": (3, F.TYPE_INT64),
        "leader": (4, F.TYPE_UINT64),
        "raftIndex": (5, F.TYPE_UINT64),
        "raftTerm": (6, F.TYPE_UINT64),
        "raftAppliedIndex": (7, F.TYPE_UINT64),
        "errors": (8, F.TYPE_STRING),
        "dbSizeInUse": (9, F.TYPE_INT64),
        "isLearner": (10, F.TYPE_BOOL),
    },
    "AlarmRequest": {"action": (1, F.TYPE_ENUM), "memberID": (2, F.TYPE_UINT64), "alarm": (3, F.TYPE_ENUM)},
    "AlarmMember": {"memberID": (1, F.TYPE_UINT64), "alarm": (2, F.TYPE_ENUM)},
    "HashKVResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "hash": (2, F.TYPE_UINT32),
        "compact_revision": (3, F.TYPE_INT64),
    },
    "SnapshotResponse": {
        "header": (1, F.TYPE_MESSAGE),
        "remaining_bytes": (2, F.TYPE_UINT64),
        "blob": (3, F.TYPE_BYTES),
    },
    "MoveLeaderRequest": {"targetID": (1, F.TYPE_UINT64)},
}

MODULES = (common_pb2, kv_pb2, cluster_pb2, maintenance_pb2)


def _message(name: str):  # type: ignore[no-untyped-def]
    for mod in MODULES:
        if name in mod.DESCRIPTOR.message_types_by_name:
            return mod.DESCRIPTOR.message_types_by_name[name]
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_field_numbers_and_types(name: str) -> None:
    desc = _message(name)
    assert desc.full_name == f"etcdserverpb.{name}"
    got = {f.name: (f.number, f.type) for f in desc.fields}
    for field, expected in FIELDS[name].items():
        assert got[field] == expected, f"{name}.{field}"


def test_enum_values() -> None:
    assert dict(maintenance_pb2.AlarmType.items()) == {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}
    assert dict(maintenance_pb2.AlarmRequest.AlarmAction.items()) == {
        "GET": 0,
        "ACTIVATE": 1,
        "DEACTIVATE": 2,
    }
    assert dict(kv_pb2.Compare.CompareResult.items()) == {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3}
    assert dict(kv_pb2.Compare.CompareTarget.items()) == {
        "VERSION": 0,
        "CREATE": 1,
        "MOD": 2,
        "VALUE": 3,
        "LEASE": 4,
    }


def test_service_paths() -> None:
    services = {
        s.full_name: sorted(m.name for m in s.methods)
        for mod in (kv_pb2, cluster_pb2, maintenance_pb2)
        for s in mod.DESCRIPTOR.services_by_name.values()
    }
    assert services == {
        "etcdserverpb.KV": ["Compact", "DeleteRange", "Put", "Range", "Txn"],
        "etcdserverpb.Cluster": ["MemberAdd", "MemberList", "MemberPromote", "MemberRemove"],
        "etcdserverpb.Maintenance": ["Alarm", "Defragment", "HashKV", "MoveLeader", "Snapshot", "Status"],
    }
    snapshot = maintenance_pb2.DESCRIPTOR.services_by_name["Maintenance"].methods_by_name["Snapshot"]
    assert snapshot.server_streaming and not snapshot.client_streaming


def test_known_wire_bytes() -> None:
    # tag = number << 3 | wire type: key=1 (0x0a), range_end=2 (0x12), limit=3 (0x18), keys_only=8 (0x40).
    req = kv_pb2.RangeRequest(key=b"a", range_end=b"b", limit=3, keys_only=True)
    assert req.SerializeToString() == b"\x0a\x01a\x12\x01b\x18\x03\x40\x01"
    # Compare.mod_revision is field 6 (0x30), range_end is field 64 (two-byte tag 0x82 0x04).
    cmp = kv_pb2.Compare(target=kv_pb2.Compare.MOD, key=b"k", mod_revision=5, range_end=b"z")
    assert cmp.SerializeToString() == b"\x10\x02\x1a\x01k\x30\x05\x82\x04\x01z"
    assert cluster_pb2.MemberRemoveRequest(ID=0x1234).SerializeToString() == b"\x08\xb4\x24"


def test_round_trip_of_a_status_response() -> None:
    msg = maintenance_pb2.StatusResponse(
        header=common_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4),
        version="3.5.1",
        dbSize=20480,
        leader=2,
        raftIndex=9,
        raftTerm=4,
        raftAppliedIndex=9,
        errors=["NOSPACE"],
        dbSizeInUse=16384,
        isLearner=False,
    )
    back = maintenance_pb2.StatusResponse.FromString(msg.SerializeToString())
    assert back == msg and back.header.member_id == 2 and list(back.errors) == ["NOSPACE"]


def test_unknown_fields_from_newer_servers_are_skipped() -> None:
    # etcd 3.6 adds StatusResponse.storageVersion (11, string); our subset must still parse.
    wire = maintenance_pb2.StatusResponse(version="3.6.0").SerializeToString() + b"\x5a\x053.6.0"
    assert maintenance_pb2.StatusResponse.FromString(wire).version == "3.6.0"


@pytest.mark.parametrize(
    ("key", "end"),
    [
        (b"a", b"b"),
        (b"a/", b"a0"),
        (b"a\xff", b"b"),
        (b"\xff\xff", b"\0"),
        (b"", b"\0"),
        (b"ab\xfe", b"ab\xff"),
    ],
)
def test_prefix_end(key: bytes, end: bytes) -> None:
    assert prefix_end(key) == end
