"""``up``, ``down`` and ``destroy`` of a local workspace: ``plan`` (pure) and ``run``."""
