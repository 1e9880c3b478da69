"""asyncssh, imported quietly.

cryptography 48 and newer warn that DSA is deprecated when asyncssh's modules load (asyncssh still knows
DSA keys; etcdforge never uses them). That warning is about a library, not the user's cluster, and it
would break the CLI's promise of one line per error, so it is silenced for the import only.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"DSA is deprecated")
    import asyncssh

__all__ = ["asyncssh"]
