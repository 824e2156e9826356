"""Test certificates for HBONE: a mesh root and workload credentials signed with meshcore.pki."""

from __future__ import annotations

import datetime as dt
import functools

from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.tlsconfig import WorkloadCredentials

NOW = dt.datetime.now(dt.UTC)


@functools.cache
def root(trust_domain: str = "cluster.local") -> pki.Issuer:
    """One root per trust domain for the whole test session."""
    return pki.new_root(trust_domain, lifetime=dt.timedelta(days=30), now=NOW)


def sa(name: str, namespace: str = "default", trust_domain: str = "cluster.local") -> SpiffeId:
    return SpiffeId(trust_domain, namespace, name)


def credentials(
    identity: SpiffeId,
    *,
    issuer: pki.Issuer | None = None,
    trust_roots: list[pki.Issuer] | None = None,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
) -> WorkloadCredentials:
    """Credentials for `identity` signed by `issuer` (default: the trust domain's root)."""
    issuer = issuer or root(identity.trust_domain)
    roots = trust_roots or [root(identity.trust_domain)]
    key = pki.new_private_key()
    leaf = pki.sign_workload_certificate(
        issuer, key.public_key(), identity, lifetime=lifetime, now=now or NOW
    )
    return WorkloadCredentials(
        identity=identity,
        chain_pem=pki.cert_pem(leaf),
        key_pem=pki.private_key_pem(key),
        roots_pem=b"".join(pki.cert_pem(r.certificate) for r in roots),
        not_after=leaf.not_valid_after_utc,
    )


@functools.cache
def cached(name: str, namespace: str = "default") -> WorkloadCredentials:
    """Session-cached credentials in cluster.local (key generation costs milliseconds)."""
    return credentials(sa(name, namespace))
