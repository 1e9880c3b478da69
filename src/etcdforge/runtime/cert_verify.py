"""Carry out :class:`~etcdforge.plan.VerifyPresented` and :class:`~etcdforge.plan.WaitPeerServing`:
handshakes with members' ports (the same in every mode).

The expected serial is read from the control PKI when the step runs, not when it is planned: the plan is
made before the certificate is (re)issued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from etcdforge.errors import EtcdTLSError, EtcdUnavailable, PkiError
from etcdforge.etcd.presented import presented_certificate
from etcdforge.etcd.types import TlsFiles
from etcdforge.pki.keys import load_cert
from etcdforge.plan import VerifyPresented, WaitPeerServing
from etcdforge.workspace import Workspace

#: etcd serves the new file from the next handshake on; a short retry covers a handshake that raced
#: the rename and a member that is still coming back from a restart
VERIFY_SECONDS = 10.0
VERIFY_INTERVAL = 0.2
#: between attempts to reach a peer port that is not bound yet (etcd binds it milliseconds after start)
SERVING_INTERVAL = 0.01


def admin_tls(ws: Workspace) -> TlsFiles:
    paths = ws.client_paths()
    return TlsFiles(ca=Path(paths.ca_cert), cert=Path(paths.cert), key=Path(paths.key))


def endpoint_tls(ws: Workspace, member: str, *, peer: bool) -> TlsFiles:
    """How this machine opens a handshake with a member's client port (the admin client certificate,
    trusting what clients trust) or peer port (the member's own peer certificate, trusting what peers
    trust: a peer port accepts nothing else)."""
    if not peer:
        return admin_tls(ws)
    from etcdforge import topology

    stem = topology.peer_cert_name(member)
    return TlsFiles(ca=ws.peer_trusted_ca, cert=ws.cert_path(stem), key=ws.key_path(stem))


async def verify_presented(
    ws: Workspace,
    action: VerifyPresented,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    seconds: float = VERIFY_SECONDS,
) -> str:
    want = load_cert(ws.cert_path(action.cert)).serial_number
    deadline = clock() + seconds
    while True:
        try:
            got = await presented_certificate(action.url, endpoint_tls(ws, action.member, peer=action.peer))
        except (EtcdUnavailable, EtcdTLSError) as exc:
            if clock() >= deadline:
                if not action.required and isinstance(exc, EtcdUnavailable):
                    return f"not reachable from here ({exc}); not verified"
                raise PkiError(
                    f"{action.member}: could not check the certificate {action.url} presents: {exc}"
                ) from exc
        else:
            if got.serial == want:
                return f"{action.url} presents serial {want:x}"
            if clock() >= deadline:
                raise PkiError(
                    f"{action.member}: {action.url} still presents serial {got.serial:x}, "
                    f"not the new {want:x} of {action.cert}",
                    hint="check that the member's certificate files were replaced and that etcd is ≥ 3.2",
                )
        await sleep(VERIFY_INTERVAL)


async def wait_peer_serving(
    ws: Workspace,
    action: WaitPeerServing,
    *,
    running: Callable[[], Awaitable[bool]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    handshake: Callable[..., Awaitable[object]] = presented_certificate,
) -> str:
    """Wait until the member's peer port completes a handshake with the member's own peer certificate
    (a port that is bound but not served yet holds the handshake until it is). Never fails: a member
    that does not serve in time, has exited, or answers with a TLS problem is the health wait's to judge.
    ``handshake`` is :func:`presented_certificate` (tests play a port's answers)."""
    tls = endpoint_tls(ws, action.member, peer=True)
    start = clock()
    while True:
        remaining = start + action.timeout - clock()
        if remaining <= 0:
            return f"not serving after {action.timeout:.0f}s (left to the health wait)"
        try:
            await handshake(action.url, tls, timeout=remaining)
            return f"serving after {clock() - start:.2f}s"
        except EtcdTLSError as exc:
            return f"answers, but {exc} (left to the health wait)"
        except OSError as exc:  # the member's peer certificate or its CA cannot be loaded here
            return f"not checked: {exc} (left to the health wait)"
        except EtcdUnavailable:
            if not await running():
                return "not running (left to the health wait)"
            await sleep(SERVING_INTERVAL)
