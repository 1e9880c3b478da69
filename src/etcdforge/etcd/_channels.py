"""One lazily created, reused ``grpc.aio`` channel per etcd endpoint, and the error boundary around calls.

Role: the only module that touches grpc's transport objects. :class:`ChannelPool` owns the channels;
:meth:`ChannelPool.guard` converts any grpc failure raised inside it into our error tree, diagnosing
TLS causes that gRPC reports as a bare UNAVAILABLE.

Invariants:
- At most one channel per endpoint for the pool's lifetime (until :meth:`close`); channels belong to the
  event loop that created them, so a pool is used from one loop.
- Certificate files are read once, at the first channel, so a rotated file takes effect on a new pool.
- Reconnect backoff is capped low (1 s) because operators restart members while we watch them; grpc's
  default (up to 120 s) would make a restarted member look dead for minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import grpc
import grpc.aio

from etcdforge.errors import EtcdError, EtcdUnavailable, PkiError

from . import tlsdiag
from ._gen import cluster_pb2_grpc, kv_pb2_grpc, maintenance_pb2_grpc
from .failures import map_status
from .types import TlsFiles

_CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    # A snapshot chunk or a big range must never trip grpc's 4 MiB default.
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # etcd's server-side keepalive policy permits pings every 5 s; 30 s stays well clear of it.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)

# Time allowed to the ssl probe that explains a connection failure.
_DIAGNOSE_TIMEOUT: Final = 2.0


class Stubs:
    """The three service stubs bound to one channel."""

    def __init__(self, channel: Any) -> None:
        self.kv: Any = kv_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        self.cluster: Any = cluster_pb2_grpc.ClusterStub(channel)  # type: ignore[no-untyped-call]
        self.maintenance: Any = maintenance_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]


class ChannelPool:
    """Channels and stubs per endpoint, plus the grpc→etcdforge error boundary."""

    def __init__(self, tls: TlsFiles | None) -> None:
        self._tls = tls
        self._credentials: Any = None
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, Stubs] = {}

    def _creds(self) -> Any:
        if self._credentials is None:
            tls = self._tls
            if tls is None:
                raise PkiError("an https:// endpoint needs TLS files (at least the CA certificate)")
            try:
                ca = tls.ca.read_bytes()
                cert = tls.cert.read_bytes() if tls.cert else None
                key = tls.key.read_bytes() if tls.key else None
            except OSError as exc:
                raise PkiError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
        return self._credentials

    def channel(self, endpoint: str) -> Any:
        ch = self._channels.get(endpoint)
        if ch is None:
            scheme, host, port = tlsdiag.split_endpoint(endpoint)
            # grpc verifies the server certificate against the host part of the target, like etcdctl.
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if scheme == "https":
                ch = grpc.aio.secure_channel(target, self._creds(), options=_CHANNEL_OPTIONS)
            else:
                ch = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            self._channels[endpoint] = ch
        return ch

    def stubs(self, endpoint: str) -> Stubs:
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            stubs = self._stubs[endpoint] = Stubs(self.channel(endpoint))
        return stubs

    async def connect(self, endpoint: str, timeout: float) -> None:
        """Wait until the endpoint's channel is READY, or raise the diagnosed reason it is not.

        Used before non-idempotent calls: failing here proves the request was never sent, so the caller
        may safely try another endpoint.
        """
        ch = self.channel(endpoint)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = ch.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                diagnosed = await tlsdiag.diagnose(
                    endpoint, self._tls, timeout=min(_DIAGNOSE_TIMEOUT, timeout)
                )
                if diagnosed is not None:
                    raise diagnosed
                # The endpoint answers our probe now: grpc is in reconnect backoff; keep waiting for it.
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise EtcdUnavailable(f"{endpoint}: could not connect within {timeout:g}s", endpoint=endpoint)
            try:
                await asyncio.wait_for(ch.wait_for_state_change(state), remaining)
            except TimeoutError:
                continue  # the deadline check above raises with the endpoint named
            state = ch.get_state(try_to_connect=True)

    @asynccontextmanager
    async def guard(self, endpoint: str, timeout: float | None) -> AsyncIterator[None]:
        """Run grpc calls inside; any grpc error leaves as an :class:`EtcdError` naming ``endpoint``."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise await self.translate(exc, endpoint, timeout) from None

    async def translate(self, exc: Any, endpoint: str, timeout: float | None) -> EtcdError:
        code = exc.code()
        code_name: str = code.name if code is not None else "UNKNOWN"
        details: str = exc.details() or ""
        error = map_status(code_name, details, endpoint=endpoint, timeout=timeout)
        if type(error) is EtcdUnavailable and code_name == "UNAVAILABLE":
            # grpc says only "failed to connect"; ask the TLS layer what really went wrong.
            # Never wait longer for the explanation than the caller was willing to wait for the call: a
            # member that accepts TCP but is not serving yet (waiting for quorum) would stall pollers.
            probe_timeout = _DIAGNOSE_TIMEOUT if timeout is None else min(_DIAGNOSE_TIMEOUT, timeout)
            diagnosed = await tlsdiag.diagnose(endpoint, self._tls, timeout=probe_timeout)
            if diagnosed is not None:
                return diagnosed
        return error

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
