import sys
from pathlib import Path

# tests/ helpers (etcd_binaries) importable from every test package
sys.path.insert(0, str(Path(__file__).parent))
