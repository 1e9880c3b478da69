"""The one PKI-planning helper: what the workspace's PKI must issue for a spec, from what is on disk.

Every verb that issues certificates (up, apply, member add, renew, rotate-ca, adopt) plans them here,
so the same settings (the spec's CA, an external CA, the renewal window) decide everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from etcdforge import certs
from etcdforge.pki import CertRequest, PkiPlan, observe_pki, plan_pki
from etcdforge.pki.observe import PEER_CA_STEM
from etcdforge.spec import ClusterSpec, expiry
from etcdforge.workspace import Workspace


def plan_workspace_pki(
    spec: ClusterSpec,
    ws: Workspace,
    *,
    requests: Sequence[CertRequest] | None = None,
    now: datetime | None = None,
    renew_before: timedelta | None = None,
    force: frozenset[str] = frozenset(),
    new_keys: bool = False,
) -> PkiPlan:
    """The PKI plan for ``spec`` in ``ws`` (``requests``: a subset of the spec's certificates).

    When the workspace keeps peers apart
    (:attr:`Workspace.separate_peers`) the peer certificates are planned against the peers' CA, in the
    plan's ``peer`` part; otherwise the CA signs them too (a workspace made before the peers' CA, until
    ``pki rotate-ca --peer`` moves it over).
    """
    external = certs.external_ca(spec, base_dir=ws.root)
    wanted = certs.cert_requests(spec, base_dir=ws.root) if requests is None else requests
    separate = ws.separate_peers
    now = now or datetime.now(UTC)
    settings = certs.ca_settings(spec, base_dir=ws.root)
    window = expiry(spec.pki.renew_before) if renew_before is None else renew_before
    peer = None
    if separate:
        peers = [r for r in wanted if r.profile == "peer"]
        wanted = [r for r in wanted if r.profile != "peer"]
        if peers or requests is None:
            peer = plan_pki(
                certs.peer_ca_settings(settings),
                peers,
                observe_pki(ws.pki_dir, ca_stem=PEER_CA_STEM),
                now,
                renew_before=window,
                force=force,
                new_keys=new_keys,
            )
    main = plan_pki(
        settings,
        wanted,
        observe_pki(ws.pki_dir, external),
        now,
        external_ca=external,
        renew_before=window,
        force=force,
        new_keys=new_keys,
    )
    return replace(main, peer=peer)
