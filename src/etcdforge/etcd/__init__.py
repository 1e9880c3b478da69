"""etcdforge's own etcd v3 client (gRPC over mutual TLS), its value types and its error refinements.

Importing this package is cheap: grpc and protobuf load on a client's first call. Public names::

    EtcdClient, TlsFiles, Member, MemberStatus, Health, KeyValue, GetResult, TxnResult, Alarm, HashKV,
    AuthStatus, Permission, PermissionKind, EtcdServerError, EtcdServerUnavailable, EtcdReason, Backoff,
    retry, format_member_id
"""

from __future__ import annotations

from .client import EtcdClient
from .failures import EtcdReason, EtcdServerError, EtcdServerUnavailable
from .retry import Backoff, retry
from .types import (
    Alarm,
    AuthStatus,
    GetResult,
    HashKV,
    Health,
    KeyValue,
    Member,
    MemberStatus,
    Permission,
    PermissionKind,
    TlsFiles,
    TxnResult,
    format_member_id,
)

__all__ = [
    "Alarm",
    "AuthStatus",
    "Backoff",
    "EtcdClient",
    "EtcdReason",
    "EtcdServerError",
    "EtcdServerUnavailable",
    "GetResult",
    "HashKV",
    "Health",
    "KeyValue",
    "Member",
    "MemberStatus",
    "Permission",
    "PermissionKind",
    "TlsFiles",
    "TxnResult",
    "format_member_id",
    "retry",
]
