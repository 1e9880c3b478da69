"""The workspace directory: where a cluster's spec, PKI and (in local mode) members live.

Layout::

    DIR/cluster.yaml                 the spec
    DIR/pki/                         the control machine's PKI: ca.pem, ca-key.pem, NAME.pem, NAME-key.pem
        peer-ca.pem, peer-ca-key.pem the peers' own CA: signs NAME-peer.pem, the only CA peer listeners trust
        trust.pem                    after a CA rotation started: the CAs members and clients trust
        peer-trust.pem               after a rotation of the peers' CA started: what peer listeners trust
        rotation/                    during a CA rotation only: its state and the old and new CA
        retired/                     CAs replaced by a rotation (kept, trusted by nobody)
    DIR/etcdctl.env                  shell exports for plain etcdctl (admin client)
    DIR/members/NAME/                local mode only: one directory per member
        etcd.conf.yml                its etcd config
        pki/                         its own key pairs and the CA certificates — never a CA key
        data/                        its data dir (never wiped by `up`/`down`)
        etcd.log, etcd.pid           supervisor files

The default workspace is ``$ETCDFORGE_DIR`` or ``~/.local/share/etcdforge/local`` (XDG).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etcdforge import topology
from etcdforge.errors import WorkspaceError
from etcdforge.render import ClientPaths, MemberPaths
from etcdforge.spec import SPEC_FILE, ClusterSpec, load_spec

if TYPE_CHECKING:
    from etcdforge.etcd import EtcdClient


def default_dir() -> Path:
    from etcdforge.fsutil import default_workspace_dir

    return default_workspace_dir()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def restore_record(self) -> Path:
        """The record of a restore in flight (written and removed by the restore's plan)."""
        return self.root / "restore.json"

    @property
    def env_path(self) -> Path:
        return self.root / "etcdctl.env"

    @property
    def members_dir(self) -> Path:
        return self.root / "members"

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def member_dir(self, name: str) -> Path:
        return self.members_dir / name

    def member_pki_dir(self, name: str) -> Path:
        return self.member_dir(name) / "pki"

    def member_log(self, name: str) -> Path:
        return self.member_dir(name) / "etcd.log"

    def member_pid(self, name: str) -> Path:
        return self.member_dir(name) / "etcd.pid"

    def member_paths(self, name: str) -> MemberPaths:
        """Paths of a local member's files (absolute, as etcd reads them from its config)."""
        d = self.member_dir(name).resolve()
        p = d / "pki"
        return MemberPaths(
            config=str(d / "etcd.conf.yml"),
            data_dir=str(d / "data"),
            ca_cert=str(p / "ca.pem"),
            server_cert=str(p / "server.pem"),
            server_key=str(p / "server-key.pem"),
            peer_cert=str(p / "peer.pem"),
            peer_key=str(p / "peer-key.pem"),
            peer_ca_cert=str(p / "peer-ca.pem"),
        )

    def cert_path(self, stem: str) -> Path:
        return self.pki_dir / f"{stem}.pem"

    def key_path(self, stem: str) -> Path:
        return self.pki_dir / f"{stem}-key.pem"

    @property
    def ca_cert(self) -> Path:
        """The CA that signs (its key is ``ca-key.pem``)."""
        return self.pki_dir / "ca.pem"

    @property
    def trust_bundle(self) -> Path:
        """What members trust, once a CA rotation has started: old + new CA during the rotation, the new
        CA after it (a stable path for your own clients). Absent before the first rotation."""
        return self.pki_dir / "trust.pem"

    @property
    def trusted_ca(self) -> Path:
        """What members and clients trust: the rotation's bundle if there is one, else the CA."""
        if self.trust_bundle.is_file() and _bundle_holds(self.trust_bundle, self.ca_cert):
            return self.trust_bundle
        return self.ca_cert  # no bundle, or a stale one (the CA was replaced some other way): ignore it

    @property
    def peer_ca_cert(self) -> Path:
        """The peers' CA (its key is ``peer-ca-key.pem``): it signs the peer certificates and is all
        the peer listeners trust. Absent in a workspace made before it, until ``pki rotate-ca --peer``."""
        return self.pki_dir / "peer-ca.pem"

    @property
    def peer_trust_bundle(self) -> Path:
        """What the peer listeners trust once a rotation of the peers' CA has started (old + new during
        it, the new one after)."""
        return self.pki_dir / "peer-trust.pem"

    @property
    def separate_peers(self) -> bool:
        """Whether peers have their own CA: yes in every workspace etcdforge makes now (a new one has no
        CA yet); no in one whose CA was made before the peers' CA existed, until it migrates."""
        d = self.pki_dir
        if (d / "peer-ca.pem").exists() or (d / "peer-ca-key.pem").exists():
            return True
        return not (d / "ca.pem").exists() and not (d / "ca-key.pem").exists()

    @property
    def peer_signing_ca(self) -> Path:
        """The CA that signs the peer certificates now: the peers' CA, or the CA in a workspace without."""
        return self.peer_ca_cert if self.peer_ca_cert.is_file() else self.ca_cert

    @property
    def peer_trusted_ca(self) -> Path:
        """What the members' peer listeners trust: a rotation's peer bundle, else the peers' CA, else (a
        workspace without one) what clients trust."""
        if self.peer_trust_bundle.is_file() and _bundle_holds(self.peer_trust_bundle, self.peer_signing_ca):
            return self.peer_trust_bundle
        if self.separate_peers:  # (in a new workspace: the file the PKI step is about to create)
            return self.peer_ca_cert
        return self.trusted_ca

    def trusted_source(self, name: str) -> Path:
        """The workspace file a member's trusted-CA file is made from (``ca.pem``: clients and the client
        listener; ``peer-ca.pem``: the peer listener); another name is a plain PKI file."""
        if name == "ca.pem":
            return self.trusted_ca
        if name == "peer-ca.pem":
            return self.peer_trusted_ca
        return self.pki_dir / name

    @property
    def rotation_dir(self) -> Path:
        return self.pki_dir / "rotation"

    def client_paths(self, client: str = topology.ADMIN_CLIENT) -> ClientPaths:
        stem = topology.client_cert_name(client)
        return ClientPaths(
            ca_cert=str(self.trusted_ca.resolve()),
            cert=str(self.cert_path(stem).resolve()),
            key=str(self.key_path(stem).resolve()),
        )


def _bundle_holds(bundle: Path, ca: Path) -> bool:
    """Whether the PEM bundle contains the CA certificate (compared as DER, whatever the PEM layout)."""
    from cryptography import x509

    try:
        wanted = x509.load_pem_x509_certificate(ca.read_bytes())
        return wanted in x509.load_pem_x509_certificates(bundle.read_bytes())
    except (OSError, ValueError):
        return False


def resolve_path(ws: Workspace, path: str) -> Path:
    """A spec path: ``~`` expanded, relative to the workspace."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ws.root / p


def load_workspace(directory: Path) -> tuple[Workspace, ClusterSpec]:
    """The workspace at ``directory`` and its spec; a clear error if there is none."""
    ws = Workspace(directory)
    if not ws.exists():
        raise WorkspaceError(f"no cluster in {directory}", hint="run `etcdforge up` first, or pass --dir")
    return ws, load_spec(ws.spec_path)


def admin_client(spec: ClusterSpec, ws: Workspace, *, timeout: float = 5.0) -> EtcdClient:
    """A client for every member's client URL, authenticated with the workspace's admin certificate."""
    from etcdforge.etcd import EtcdClient, TlsFiles

    paths = ws.client_paths()
    tls = TlsFiles(ca=Path(paths.ca_cert), cert=Path(paths.cert), key=Path(paths.key))
    return EtcdClient(list(topology.client_urls(spec)), tls, timeout=timeout)
