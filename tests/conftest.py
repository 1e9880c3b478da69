import os
import sys
from pathlib import Path

# gRPC's C core logs every refused TLS handshake to stderr; the tests assert on our own messages instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# tests/ helpers (etcd_binaries) importable from every test package
sys.path.insert(0, str(Path(__file__).parent))
