"""etcdforge: stand up and run secure (mutual-TLS) etcd clusters from one spec.

The public API is listed in ``__all__``; names are imported lazily so that ``import etcdforge`` (and the
CLI's startup) stays cheap — grpc, cryptography and pydantic load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # errors
    "EtcdforgeError": "etcdforge.errors",
    "SpecError": "etcdforge.errors",
    "WorkspaceError": "etcdforge.errors",
    "PkiError": "etcdforge.errors",
    "CfsslConfigError": "etcdforge.errors",
    "BinaryError": "etcdforge.errors",
    "EtcdError": "etcdforge.errors",
    "EtcdUnavailable": "etcdforge.errors",
    "EtcdTLSError": "etcdforge.errors",
    "EtcdRequestError": "etcdforge.errors",
    "MemberStartError": "etcdforge.errors",
    "PlanError": "etcdforge.errors",
    "StepError": "etcdforge.errors",
    # spec
    "ClusterSpec": "etcdforge.spec",
    "MemberSpec": "etcdforge.spec",
    "load_spec": "etcdforge.spec",
    "load_spec_text": "etcdforge.spec",
    "dump_spec": "etcdforge.spec",
    # client
    "EtcdClient": "etcdforge.etcd",
    "TlsFiles": "etcdforge.etcd",
    # workspace operations
    "Workspace": "etcdforge.workspace",
    "up": "etcdforge.operations.lifecycle",
    "down": "etcdforge.operations.lifecycle",
    "destroy": "etcdforge.operations.lifecycle",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'etcdforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
