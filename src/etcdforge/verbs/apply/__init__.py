"""``plan`` and ``apply`` on real hosts: ``plan`` (pure) and ``run``."""
