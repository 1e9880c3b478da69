"""Generated protobuf/gRPC stubs for etcdforge's etcd API subset (see scripts/gen_protos.py)."""
