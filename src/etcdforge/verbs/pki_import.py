"""``etcdforge pki import-cfssl SRC``: take over a cfssl PKI (the guide's) into a workspace.

The analysis is :mod:`etcdforge.pki.import_cfssl` (pure); this module reads the source directory,
writes the CA and JSON into the workspace, and points the spec's ``pki`` section at them — the spec is
validated before anything is written, so an import never leaves a spec that ``plan`` would reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdforge.errors import PkiError, SpecError
from etcdforge.executor import execute
from etcdforge.pki.import_cfssl import CFSSL_SUBDIR, CfsslImport, analyze, read_source_dir
from etcdforge.pki.keys import key_matches, parse_cert, parse_key
from etcdforge.pki.observe import CA_CERT, CA_KEY, PEER_CA_CERT, PEER_CA_KEY
from etcdforge.plan import Plan, Step, WriteFile
from etcdforge.runtime.control import ControlFiles
from etcdforge.spec import ClusterSpec, dump_spec, load_spec, load_spec_text, parse_spec
from etcdforge.workspace import Workspace


@dataclass(frozen=True)
class ImportResult:
    imported: CfsslImport
    written: tuple[Path, ...]
    spec_updated: bool


def import_steps(workspace: Path, imp: CfsslImport) -> list[Step]:
    """The writes that put the CA and the JSON into the workspace (none for what is already there);
    a different CA already there is refused."""
    pki = workspace / "pki"
    cert_path, key_path = pki / CA_CERT, pki / CA_KEY
    have_cert = parse_cert(cert_path.read_bytes(), origin=str(cert_path)) if cert_path.is_file() else None
    have_key = parse_key(key_path.read_bytes(), origin=str(key_path)) if key_path.is_file() else None
    if (have_cert is not None and have_cert != imp.ca_cert) or (
        have_key is not None and not key_matches(imp.ca_cert, have_key)
    ):
        raise PkiError(
            f"{pki} already holds a different CA",
            hint="etcdforge never replaces a CA; use a new --dir, or move the old pki/ away",
        )
    steps: list[Step] = []
    if have_key is None:  # the key first: a CA certificate without its key is refused by `plan`
        write = WriteFile(str(key_path), imp.ca_key_pem, 0o600, secret=True)
        steps.append(Step("pki/ca-key", "local", write, "the CA's key (it never leaves the workspace)"))
    if have_cert is None:
        steps.append(Step("pki/ca", "local", WriteFile(str(cert_path), imp.ca_cert_pem), "the CA"))
    steps += _peer_ca_steps(pki, imp)
    cfssl_dir = workspace / CFSSL_SUBDIR
    for name, data in sorted(imp.configs.items()):
        path = cfssl_dir / name
        if not path.is_file() or path.read_bytes() != data:
            steps.append(Step(f"pki/cfssl:{name}", "local", WriteFile(str(path), data), "cfssl settings"))
    return steps


def _peer_ca_steps(pki: Path, imp: CfsslImport) -> list[Step]:
    """The peers' CA of the import, if it has one (refused when the workspace holds another)."""
    if imp.peer_ca is None:
        return []
    name, cert_pem, key_pem = imp.peer_ca
    cert_path, key_path = pki / PEER_CA_CERT, pki / PEER_CA_KEY
    have = parse_cert(cert_path.read_bytes(), origin=str(cert_path)) if cert_path.is_file() else None
    if have is not None and have != parse_cert(cert_pem, origin=name):
        raise PkiError(f"{pki} already holds a different peers' CA", hint="use a new --dir")
    if have is not None:
        return []
    return [
        Step(
            "pki/peer-ca-key",
            "local",
            WriteFile(str(key_path), key_pem, 0o600, secret=True),
            "the peers' CA key",
        ),
        Step("pki/peer-ca", "local", WriteFile(str(cert_path), cert_pem), "the peers' CA"),
    ]


def pki_settings(imp: CfsslImport) -> dict[str, Any]:
    """The spec's ``pki`` keys an import sets: the cfssl section, and the leaves' key/names without a CSR."""
    out: dict[str, Any] = {"cfssl": imp.cfssl_settings()}
    if imp.leaf_csr is None and imp.leaf_key is not None:
        out["key"] = {"algo": imp.leaf_key.algo, "size": imp.leaf_key.size}
    if imp.leaf_csr is None and imp.leaf_subject is not None:
        s = imp.leaf_subject
        names = {"C": s.C, "ST": s.ST, "L": s.L, "O": s.O, "OU": s.OU}
        out["subject"] = {k: v for k, v in names.items() if v}
    return out


def updated_spec(spec: ClusterSpec, imp: CfsslImport) -> ClusterSpec:
    if spec.pki.ca is not None:
        raise SpecError(
            "cluster.yaml's pki.ca already names an external CA",
            hint="remove pki.ca to import this one into the workspace",
        )
    data = spec.model_dump(mode="json", exclude_defaults=True)
    pki = dict(data.get("pki", {}))
    pki.pop("cfssl", None)
    pki.update(pki_settings(imp))
    data["pki"] = pki
    return parse_spec(data)


async def import_cfssl(directory: Path, source: Path) -> ImportResult:
    """Import ``source`` into the workspace at ``directory`` (created if needed): one plan of writes,
    the spec (validated first) last."""
    from etcdforge.verbs.up.run import workspace_lock

    ws = Workspace(directory)
    with workspace_lock(ws):  # the spec is read and written under the lock
        imp = analyze(read_source_dir(source), datetime.now(UTC))
        steps = import_steps(directory, imp)
        updated = False
        if ws.exists():
            text = dump_spec(updated_spec(load_spec(ws.spec_path), imp))
            load_spec_text(text, source=str(ws.spec_path))
            steps.append(Step("workspace/write-spec", "local", WriteFile(str(ws.spec_path), text.encode()),
                              "pki: the imported cfssl settings"))  # fmt: skip
            updated = True
        await execute(Plan("pki-import", tuple(steps)), ControlFiles())
    written = tuple(Path(s.action.path) for s in steps if isinstance(s.action, WriteFile))
    return ImportResult(imp, written, updated)
