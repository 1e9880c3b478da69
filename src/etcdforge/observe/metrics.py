"""Read each member's ``/metrics``: the only I/O behind ``etcdforge metrics`` and ``doctor``'s metric rules.

Where from: in local mode the member's plain-http loopback listener (``listen-metrics-urls``, on this
machine); on hosts that listener is on the host's own loopback, so the control machine reads the same page
from the member's client URL over mutual TLS with the admin certificate (etcd serves ``/metrics`` there
too). Proxies from the environment are never used: the addresses are the spec's own.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
from dataclasses import dataclass

from etcdforge import exposition, topology
from etcdforge.spec import ClusterSpec, MemberSpec
from etcdforge.workspace import Workspace

#: a member's page is ~200 kB; anything far bigger is not etcd
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Scrape:
    member: str
    url: str
    samples: tuple[exposition.Sample, ...] = ()
    error: str | None = None

    @property
    def figures(self) -> exposition.Figures | None:
        return None if self.error is not None else exposition.figures(self.samples)


def metrics_source(spec: ClusterSpec, member: MemberSpec) -> str:
    """The URL etcdforge reads a member's metrics from (see the module's note)."""
    local = topology.metrics_url(spec, member)
    if local is not None and not spec.on_own_hosts:
        return f"{local}/metrics"
    return f"{topology.client_url(spec, member)}/metrics"


def _tls_context(ws: Workspace) -> ssl.SSLContext:
    paths = ws.client_paths()
    context = ssl.create_default_context(cafile=str(ws.trusted_ca))
    context.load_cert_chain(paths.cert, paths.key)
    return context


def _get(url: str, context: ssl.SSLContext | None, timeout: float) -> str:
    import urllib.request

    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"more than {MAX_BYTES} bytes")
    return body.decode("utf-8", "replace")


async def fetch_text(url: str, ws: Workspace, *, timeout: float = 5.0) -> str:
    context = _tls_context(ws) if url.startswith("https://") else None
    return await asyncio.to_thread(_get, url, context, timeout)


async def scrape_member(
    spec: ClusterSpec, ws: Workspace, member: MemberSpec, *, timeout: float = 5.0
) -> Scrape:
    url = metrics_source(spec, member)
    try:
        text = await fetch_text(url, ws, timeout=timeout)
        return Scrape(member.name, url, exposition.parse(text))
    except exposition.ExpositionError as exc:
        return Scrape(member.name, url, error=f"not a metrics page: {exc}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Scrape(member.name, url, error=f"cannot read {url}: {reason}")


async def scrape_all(
    spec: ClusterSpec, ws: Workspace, members: tuple[MemberSpec, ...] | None = None, *, timeout: float = 5.0
) -> tuple[Scrape, ...]:
    chosen = spec.members if members is None else members
    return tuple(await asyncio.gather(*(scrape_member(spec, ws, m, timeout=timeout) for m in chosen)))
