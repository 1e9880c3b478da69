"""Real SSH + systemd test hosts on one Linux machine (root only), for host tests of etcdforge.

Role: boot N "hosts", each a ``systemd-nspawn --boot`` container on a copy-on-write overlay of ``/``
with its own network namespace, its own address on a private test bridge, its own systemd as PID 1 and
OpenSSH inside, and expose faults (kill etcd, partition, stop/start a host). The recipe is
docs/test-hosts.md in the shared docs.

This package's public API is what it re-exports here (import from ``etcdforge.testing.hosts``, not from a
submodule). The modules, bottom up:

- :mod:`.base`: errors, the :class:`TestHost` record, the bounded argv runner, naming constants;
- :mod:`.network`: bridge, netns/veth, route overlap and "routed directly via the bridge" checks;
- :mod:`.processes`: ``systemd-nspawn`` launch, container PID 1, ``/proc`` PID helpers, kills;
- :mod:`.rootfs`: each host's overlay root (identity, keys, users, quiet boot) and the mount table;
- :mod:`.stale`: the owner registry under ``/run/etcdforge-testhosts`` and :func:`cleanup_stale`;
- :mod:`.harness`: :class:`TestHosts`, which owns one harness instance and composes the above.

Invariants:

- **Network safety**: every address the harness hands out lies in the harness's own subnet, and before
  ``start`` returns (and whenever :meth:`TestHosts.assert_routed_to_test_bridge` is called) ``ip route
  get ADDR`` must resolve directly (no gateway) via the harness's bridge; otherwise we raise. A subnet
  that any existing route overlaps is refused before anything is created.
- **Unique names**: bridge, netns and veth names are ``<prefix><6 hex>`` plus a suffix (``br``,
  ``n<i>``, ``v<i>``), so a leftover of a crashed run never blocks a new one; a registry file under
  ``/run/etcdforge-testhosts`` records the owning process so :func:`cleanup_stale` removes only the
  leftovers of dead owners.
- **Host keys are verified**: clients get a known_hosts file holding each host's own ed25519 key; nothing
  here uses ``StrictHostKeyChecking=no``.
- **Teardown always completes**: :meth:`TestHosts.close` never raises, also after a half-done start; it
  returns the problems it met.
- The only machine-wide setting touched: ``fs.inotify.max_user_instances`` is raised (never lowered) to
  :data:`INOTIFY_INSTANCES`, because all containers' systemds share root's inotify pool.
- Every external command is an argv list with a bounded timeout; remote commands are quoted once, with
  :func:`shlex.join`.

Synchronous on purpose: tests drive it from fixtures, and one API (not sync + async twins) is house style.
"""

from __future__ import annotations

from .base import DEFAULT_SUBNET, HostHarnessError, SubnetInUseError, TestHost, missing_prerequisites
from .base import REQUIRED_TOOLS as REQUIRED_TOOLS
from .harness import TestHosts
from .network import assert_routed_via
from .processes import INOTIFY_INSTANCES as INOTIFY_INSTANCES
from .rootfs import MASKED_UNITS as MASKED_UNITS
from .rootfs import SSHD_DROPIN as SSHD_DROPIN
from .stale import REGISTRY_DIR as REGISTRY_DIR
from .stale import cleanup_stale

__all__ = [
    "DEFAULT_SUBNET",
    "HostHarnessError",
    "SubnetInUseError",
    "TestHost",
    "TestHosts",
    "assert_routed_via",
    "cleanup_stale",
    "missing_prerequisites",
]
