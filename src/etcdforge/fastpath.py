"""The ``etcdforge`` entry point, with a quick path for ``status -o json`` (monitoring scripts run it in a
loop, and an interpreter that first loads the CLI, the spec's models and gRPC spends ~0.4 s on imports).

The quick path uses the standard library only: the spec's status inputs from :mod:`etcdforge.statuscache`
(valid only for the exact bytes of ``cluster.yaml``), and etcd's own JSON gateway (``POST
/v3/maintenance/status``, the same Maintenance RPC our gRPC client calls) over mutual TLS with the admin
certificate, one thread per member. It answers only the plain case: every member answers with no error
(etcd lists every raised alarm, and a missing leader, in each member's status errors), no CA rotation is
in flight. Anything else — a member down, an alarm, a stale or missing cache, a flag it does not know —
runs the full CLI, which words errors, alarms and exit codes, so both paths print the same thing for the
same cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from etcdforge.statuscache import StatusInputs, json_row, recall

#: seconds per request, as the full path's status
TIMEOUT = 2.0


def entry() -> None:
    """``status -o json`` on the quick path when it can answer, else the full command line."""
    directory = status_json_dir(sys.argv[1:])
    if directory is not None:
        out = quick_status(directory)
        if out is not None:
            sys.stdout.write(out)
            sys.stdout.flush()
            os._exit(0)
    from etcdforge.cli import entry as full

    full()


def status_json_dir(argv: list[str]) -> Path | None:
    """The workspace of a ``status -o json [--dir DIR]`` command line; None for any other."""
    if not argv or argv[0] != "status":
        return None
    rest = argv[1:]
    output = directory = None
    while rest:
        arg = rest.pop(0)
        if arg in ("-o", "--output", "--dir") and rest:
            value = rest.pop(0)
        elif arg.startswith("--output=") or arg.startswith("--dir="):
            arg, _, value = arg.partition("=")
        elif arg.startswith("-o") and len(arg) > 2:
            arg, value = "-o", arg[2:]
        else:
            return None
        if arg == "--dir":
            directory = value
        else:
            output = value
    if output != "json":
        return None
    if directory:
        return Path(directory)
    from etcdforge.fsutil import default_workspace_dir

    return default_workspace_dir()


def quick_status(directory: Path) -> str | None:
    """The JSON ``etcdforge status -o json`` prints, or None when the full path must answer."""
    pki = directory / "pki"
    try:
        spec_bytes = (directory / "cluster.yaml").read_bytes()
    except OSError:
        return None
    inputs = recall(directory, spec_bytes)
    if inputs is None or (pki / "trust.pem").exists() or (pki / "rotation").exists():
        return None  # (during a CA rotation clients trust a bundle the full path chooses)
    tls = (pki / "ca.pem", pki / "admin-client.pem", pki / "admin-client-key.pem")
    if not all(p.is_file() for p in tls):
        return None
    try:
        return _status(inputs, tls)
    except Exception:  # whatever went wrong here, the full path answers (and words it)
        return None


def _status(inputs: StatusInputs, tls: tuple[Path, Path, Path]) -> str | None:
    import ssl
    import threading

    ctx = ssl.create_default_context(cafile=str(tls[0]))
    ctx.load_cert_chain(str(tls[1]), str(tls[2]))
    results: dict[int, dict[str, Any]] = {}

    def ask(i: int, url: str) -> None:
        with contextlib.suppress(Exception):  # a member that does not answer is missing from results
            results[i] = _post(url, "/v3/maintenance/status", {}, ctx)

    threads = [threading.Thread(target=ask, args=(i, url)) for i, (_, url) in enumerate(inputs.members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # etcd lists every raised alarm (they are cluster-wide) in each member's status errors, and a missing
    # leader too: any error, and the full path, which reads the alarms, words it
    if len(results) != len(inputs.members) or any(r.get("errors") for r in results.values()):
        return None
    rows = [_row(name, url, results[i], inputs.quota) for i, (name, url) in enumerate(inputs.members)]
    return json.dumps(rows, indent=2) + "\n"


def _post(url: str, path: str, body: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """One JSON request over a new TLS connection (HTTP/1.1, ``Connection: close``; http.client would
    cost this path another ~10 ms of imports)."""
    import socket

    name, _, port = url.removeprefix("https://").rpartition(":")
    # bytes, not str: the socket and ssl modules IDNA-encode a str name, and that codec costs ~2 ms to import
    host = name.strip("[]").encode("ascii")
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {url.removeprefix('https://')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    with (
        socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw,  # type: ignore[arg-type]
        ctx.wrap_socket(raw, server_hostname=host) as conn,
    ):
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, data = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split(" ")[1:2] != ["200"]:
        raise OSError(f"{url}{path}: {lines[0]!r}")
    if any(h.lower().replace(" ", "") == "transfer-encoding:chunked" for h in lines[1:]):
        data = _unchunk(data)
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError(f"{url}{path}: not an object")
    return doc


def _unchunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(rest[:size])
        data = rest[size + 2 :]


def _row(name: str, url: str, s: dict[str, Any], quota: int) -> dict[str, object]:
    """One member from the gateway's answer (it writes 64-bit numbers as strings and leaves out fields at
    their default), as the full path's ``status -o json`` shows it."""
    header = s.get("header", {})
    return json_row(
        name,
        url,
        member_id=int(header.get("member_id", 0)),
        version=s.get("version", ""),
        leader=int(s.get("leader", 0)),
        raft_term=int(s.get("raftTerm", 0)),
        raft_index=int(s.get("raftIndex", 0)),
        raft_applied_index=int(s.get("raftAppliedIndex", 0)),
        db_size=int(s.get("dbSize", 0)),
        db_size_in_use=int(s.get("dbSizeInUse", 0)),
        quota=quota,
        alarms=[],
        is_learner=bool(s.get("isLearner", False)),
        revision=int(header.get("revision", 0)),
        errors=list(s.get("errors", [])),
    )
