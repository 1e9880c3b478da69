"""``adopt``: take over a hand-built cluster (its observation is in :mod:`etcdforge.observe.adopted`)."""
