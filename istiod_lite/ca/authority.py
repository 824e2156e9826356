"""The signing half of the CA: lifetimes, chain layout, and the istiod serving certificate.

Pure: holds a root `Issuer` (see `roots.py` for where it comes from) and a clock, does no I/O.
`service.py` calls `sign()` only after `authz.decide()` allowed the request; `server.py` calls
`issue_serving_certificate()` for istiod's own TLS certificate.

Invariants (re-checked here even though `authz` checked them first, so a skipped check can
never mint a certificate): the CSR verifies, its only SAN is the requested identity, and that
identity is in our trust domain. Lifetime: requested ≤ 0 → default (24 h); above the maximum
(90 d) → capped; never beyond the root's own expiry. The chain is leaf first, root last, one PEM
per element, each ending in a newline (as istiod answers).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from istiod_lite.errors import CaConfigError, CaSigningError
from meshcore import pki
from meshcore.identity import DEFAULT_TRUST_DOMAIN, SpiffeId

DEFAULT_CERT_TTL = dt.timedelta(hours=24)
MAX_CERT_TTL = dt.timedelta(days=90)
ROOT_LIFETIME = dt.timedelta(days=3650)
SERVING_CERT_TTL = dt.timedelta(days=365)
ISTIOD_DNS_NAME = "istiod.istio-system.svc"

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class LifetimePolicy:
    """How long issued leaves live: `default` when none is asked for, never above `maximum`."""

    default: dt.timedelta = DEFAULT_CERT_TTL
    maximum: dt.timedelta = MAX_CERT_TTL

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.default <= self.maximum:
            raise CaConfigError(
                f"certificate lifetimes must satisfy 0 < default ({self.default}) "
                f"<= maximum ({self.maximum}); fix the CA lifetime settings"
            )

    def lifetime_for(self, requested_seconds: int) -> dt.timedelta:
        """The lifetime to grant for a request's `validity_duration` (seconds)."""
        if requested_seconds <= 0:
            return self.default
        return min(dt.timedelta(seconds=requested_seconds), self.maximum)


@dataclasses.dataclass(frozen=True)
class ServingCertificate:
    """istiod's own TLS certificate (chain leaf first) and its private key, PEM."""

    chain_pem: bytes
    key_pem: bytes


class CertificateAuthority:
    """Signs workload leaves with a self-signed root for one trust domain."""

    def __init__(
        self,
        root: pki.Issuer,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        lifetimes: LifetimePolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._root = root
        self._trust_domain = trust_domain
        self._lifetimes = lifetimes or LifetimePolicy()
        self._clock = clock
        self._root_pem = pki.cert_pem(root.certificate).decode()

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def root_pem(self) -> str:
        """The root certificate, PEM (what clients trust, the last element of every chain)."""
        return self._root_pem

    @property
    def lifetimes(self) -> LifetimePolicy:
        return self._lifetimes

    def sign(
        self, csr_pem: str | bytes, requested_identity: SpiffeId, validity_seconds: int
    ) -> list[str]:
        """Sign the CSR for `requested_identity`; return the chain, leaf first, root last.

        Raises CaSigningError when the CSR does not name exactly the requested identity in our
        trust domain (callers must have refused such requests already).
        """
        try:
            request = pki.parse_csr(csr_pem)
        except pki.PkiError as exc:
            raise CaSigningError(f"refusing to sign an invalid CSR: {exc}") from exc
        if requested_identity.trust_domain != self._trust_domain:
            raise CaSigningError(
                f"refusing to sign {requested_identity}: not in trust domain "
                f"{self._trust_domain!r}"
            )
        if request.identity != requested_identity:
            raise CaSigningError(
                f"refusing to sign: CSR names {request.identity}, "
                f"the request is for {requested_identity}"
            )
        leaf = pki.sign_workload_certificate(
            self._root,
            request.public_key,
            requested_identity,
            lifetime=self._lifetimes.lifetime_for(validity_seconds),
            now=self._clock(),
        )
        return [pki.cert_pem(leaf).decode(), self._root_pem]

    def issue_serving_certificate(
        self,
        dns_names: Sequence[str] = (ISTIOD_DNS_NAME,),
        ip_addresses: Sequence[str] = (),
        *,
        lifetime: dt.timedelta = SERVING_CERT_TTL,
    ) -> ServingCertificate:
        """A server-auth certificate for istiod itself (DNS and IP SANs), signed by the root."""
        if not dns_names and not ip_addresses:
            raise CaConfigError("istiod's serving certificate needs at least one DNS name or IP")
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        try:
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        except ValueError as exc:
            raise CaConfigError(f"invalid IP address for istiod's certificate: {exc}") from exc
        key = pki.new_private_key()
        now = self._clock()
        not_after = min(now + lifetime, self._root.certificate.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._root.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - pki.CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._root.key.public_key()),
                critical=False,
            )
            .sign(self._root.key, hashes.SHA256())
        )
        return ServingCertificate(
            chain_pem=pki.cert_pem(cert) + self._root_pem.encode(),
            key_pem=pki.private_key_pem(key),
        )
