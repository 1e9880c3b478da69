"""Public test support for etcdforge: harnesses that other projects' and our own tests can use.

Submodules are imported explicitly (``from etcdforge.testing.hosts import TestHosts``); importing this
package does no I/O and pulls in nothing heavy.
"""
