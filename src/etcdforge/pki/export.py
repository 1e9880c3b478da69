"""``pki export-cfssl``: the cfssl inputs that reproduce our certificates.

:func:`cfssl_files` is pure: from the CA settings and the certificate requests it builds
``ca-config.json`` (profiles ``server``, ``peer``, ``client`` with our usages and expiry as Go durations),
``ca-csr.json`` for ``cfssl gencert -initca``, and one ``NAME-csr.json`` per certificate, so that::

    cfssl gencert -ca ca.pem -ca-key ca-key.pem -config ca-config.json -profile server \\
        etcd1-server-csr.json | cfssljson -bare etcd1-server

gives a certificate with the same subject, SANs, key type, usages and lifetime as ``etcd1-server.pem``.
:func:`write_cfssl_files` is the writer (atomic, 0644: nothing here is secret).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from etcdforge.pki.cfssl import CfsslProfile, ca_config_json, ca_csr_json, csr_json, profile_for
from etcdforge.pki.model import DEFAULT_USAGES, CaSettings, CertRequest, Profile

PROFILES: tuple[Profile, ...] = ("server", "peer", "client")


def cfssl_profiles(requests: Sequence[CertRequest]) -> dict[str, CfsslProfile]:
    """One profile per role, from the first request of that role (all of a role share settings).

    A role with no request (e.g. no clients) gets our default usages and the lifetime of the others.
    """
    found: dict[str, CfsslProfile] = {}
    for req in requests:
        found.setdefault(req.profile, profile_for(req))
    fallback_expiry = next(iter(found.values())).expiry if found else None
    out: dict[str, CfsslProfile] = {}
    for role in PROFILES:
        if role in found:
            out[role] = found[role]
        elif fallback_expiry is not None:
            out[role] = CfsslProfile(usages=DEFAULT_USAGES[role], expiry=fallback_expiry)
    return out


def cfssl_files(
    ca: CaSettings, requests: Sequence[CertRequest], peer_ca: CaSettings | None = None
) -> dict[str, bytes]:
    """File name -> content of everything cfssl needs to reproduce the CA and every leaf; with
    ``peer_ca`` also ``peer-ca-csr.json`` (the peers' own CA, which signs the ``peer`` profile's
    certificates: ``-ca peer-ca.pem -ca-key peer-ca-key.pem``)."""
    profiles = cfssl_profiles(requests)
    files = {
        "ca-config.json": ca_config_json(profiles, default=profiles.get("server")),
        "ca-csr.json": ca_csr_json(ca),
    }
    if peer_ca is not None:
        files["peer-ca-csr.json"] = ca_csr_json(peer_ca)
    for req in requests:
        files[f"{req.name}-csr.json"] = csr_json(req)
    return files


def write_cfssl_files(files: Mapping[str, bytes], out_dir: Path) -> list[Path]:
    """Write ``files`` into ``out_dir`` (created if needed); returns the written paths in order."""
    from etcdforge.fsutil import atomic_write

    written = []
    for name, data in files.items():
        path = out_dir / name
        atomic_write(path, data, 0o644)
        written.append(path)
    return written
