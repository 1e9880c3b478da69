"""The runtime: where plan actions take effect, the same for both modes.

One :class:`~etcdforge.runtime.core.Runtime` carries out every action through two ports — a
:class:`~etcdforge.hosts.base.Host` per member (local: this machine, argv without a shell; hosts: SSH)
and a :class:`~etcdforge.runtime.services.ServiceManager` (local: the process supervisor; hosts:
systemd). :func:`~etcdforge.runtime.factory.open_runtime` is the one place that picks them from the
spec's mode.
"""
