"""Workload credentials on disk for proxies under test (Envoy reads files; so can ours).

Who calls it: the fixtures, the interop tests and `bench/`. It wraps `meshcore.pki` (the same
functions istiod_lite's CA uses) so certificates in tests have exactly the production shape:
ECDSA P-256, empty subject, one SPIFFE URI SAN, client+server auth, signed by a per-run root.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib

from meshcore import pki
from meshcore.identity import SpiffeId

ROOT_LIFETIME = dt.timedelta(days=1)
LEAF_LIFETIME = dt.timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files of one workload: its leaf (the chain), its key and the trusted root."""

    identity: SpiffeId
    cert_chain: pathlib.Path
    private_key: pathlib.Path
    root: pathlib.Path


class TestPki:
    """A throwaway trust domain: one root, any number of workload leaves written to a folder."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: pathlib.Path, trust_domain: str = "cluster.local") -> None:
        self.directory = directory
        self.trust_domain = trust_domain
        self.now = dt.datetime.now(dt.UTC)
        self.issuer = pki.new_root(trust_domain, lifetime=ROOT_LIFETIME, now=self.now)
        directory.mkdir(parents=True, exist_ok=True)
        self.root_path = directory / "root-cert.pem"
        self.root_path.write_bytes(pki.cert_pem(self.issuer.certificate))

    def identity(self, namespace: str, service_account: str) -> SpiffeId:
        return SpiffeId(self.trust_domain, namespace, service_account)

    def issue(self, identity: SpiffeId) -> TlsFiles:
        """Key, CSR and leaf for `identity`, through the same CSR path the CA takes."""
        key = pki.new_private_key()
        request = pki.parse_csr(pki.build_csr(key, identity))
        leaf = pki.sign_workload_certificate(
            self.issuer, request.public_key, request.identity, lifetime=LEAF_LIFETIME,
            now=self.now,
        )
        stem = f"{identity.namespace}.{identity.service_account}"
        cert_path = self.directory / f"{stem}.cert.pem"
        key_path = self.directory / f"{stem}.key.pem"
        cert_path.write_bytes(pki.cert_pem(leaf))
        key_path.write_bytes(pki.private_key_pem(key))
        key_path.chmod(0o600)
        return TlsFiles(identity, cert_path, key_path, self.root_path)
