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
    "HostError": "etcdforge.hosts.errors",
    # spec
    "ClusterSpec": "etcdforge.spec",
    "MemberSpec": "etcdforge.spec",
    "load_spec": "etcdforge.spec",
    "load_spec_text": "etcdforge.spec",
    "dump_spec": "etcdforge.spec",
    # client
    "EtcdClient": "etcdforge.etcd",
    "TlsFiles": "etcdforge.etcd",
    # plans, the executor and the host port
    "Plan": "etcdforge.plan",
    "Step": "etcdforge.plan",
    "execute": "etcdforge.executor",
    "Host": "etcdforge.hosts.base",
    "LocalHost": "etcdforge.hosts.local",
    "Runtime": "etcdforge.runtime.core",
    "ServiceManager": "etcdforge.runtime.services",
    "open_runtime": "etcdforge.runtime.factory",
    # the verbs (each takes a workspace directory; "module:attribute" where the names differ)
    "Workspace": "etcdforge.workspace",
    "up": "etcdforge.verbs.up.run",
    "down": "etcdforge.verbs.up.run",
    "destroy": "etcdforge.verbs.up.run",
    "make_plan": "etcdforge.verbs.apply.run",
    "apply": "etcdforge.verbs.apply.run",
    "member_add": "etcdforge.verbs.member.run:add",
    "member_remove": "etcdforge.verbs.member.run:remove",
    "member_replace": "etcdforge.verbs.member.run:replace",
    "renew": "etcdforge.verbs.renew.run",
    "rotate_ca": "etcdforge.verbs.rotate_ca.run",
    "adopt": "etcdforge.verbs.adopt.run",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'etcdforge' has no attribute {name!r}")
    module, _, attribute = module.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
