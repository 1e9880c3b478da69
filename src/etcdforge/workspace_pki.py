"""The one PKI-planning helper: what the workspace's PKI must issue for a spec, from what is on disk.

Every verb that issues certificates (up, apply, member add, renew, rotate-ca, adopt) plans them here,
so the same settings (the spec's CA, an external CA, the renewal window) decide everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from etcdforge import certs
from etcdforge.pki import CertRequest, PkiPlan, observe_pki, plan_pki
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
    use_external_ca: bool = True,
) -> PkiPlan:
    """The PKI plan for ``spec`` in ``ws`` (``requests``: a subset of the spec's certificates).

    ``use_external_ca`` False plans from the workspace's own CA files only (a CA rotation signs with
    the CA it put there, whatever the spec names).
    """
    external = certs.external_ca(spec, base_dir=ws.root) if use_external_ca else None
    return plan_pki(
        certs.ca_settings(spec, base_dir=ws.root),
        certs.cert_requests(spec, base_dir=ws.root) if requests is None else requests,
        observe_pki(ws.pki_dir, external),
        now or datetime.now(UTC),
        external_ca=external,
        renew_before=expiry(spec.pki.renew_before) if renew_before is None else renew_before,
        force=force,
        new_keys=new_keys,
    )
