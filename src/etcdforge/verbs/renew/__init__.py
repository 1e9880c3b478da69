"""``pki renew``: hot renewal of leaf certificates — ``plan`` (pure) and ``run``."""
