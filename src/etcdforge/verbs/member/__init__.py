"""``member add``, ``remove`` and ``replace``: decisions (``plan``), steps (``steps``) and ``run``."""
