"""Specs shared by the unit tests (plain data: loading them does no I/O)."""

from __future__ import annotations

from etcdforge.spec import load_spec_text

#: three members on real hosts (documentation-style private addresses, never contacted)
HOSTS3 = load_spec_text(
    """\
name: prod
token: prod-token
mode: hosts
members:
  - {name: etcd1, address: 10.213.77.1}
  - {name: etcd2, address: 10.213.77.2}
  - {name: etcd3, address: 10.213.77.3}
"""
)
