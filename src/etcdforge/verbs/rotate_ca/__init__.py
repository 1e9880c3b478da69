"""``pki rotate-ca``: the phased, no-downtime CA rotation — ``plan`` (pure) and ``run``."""
