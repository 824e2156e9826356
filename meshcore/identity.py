"""SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

Used by the CA (what may be issued), by ztunnel and the waypoint (what a peer certificate
proves), and by the authorization evaluator (principals compare without the `spiffe://`
prefix). Parsing is strict, as ztunnel's is: exactly the five path segments `ns/<ns>/sa/<sa>`.
"""

from __future__ import annotations

import dataclasses
import re

from meshcore.errors import MeshCoreError

SPIFFE_SCHEME = "spiffe://"
DEFAULT_TRUST_DOMAIN = "cluster.local"
# DNS-label-ish trust domain and Kubernetes names; kept permissive enough for real clusters.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


class InvalidIdentityError(MeshCoreError, ValueError):
    """A string that should be a SPIFFE identity is not one; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class SpiffeId:
    """A workload identity. `str()` gives the URI form."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise InvalidIdentityError(f"invalid trust domain {self.trust_domain!r}")
        if not _K8S_NAME.match(self.namespace):
            raise InvalidIdentityError(f"invalid namespace {self.namespace!r}")
        if not _K8S_NAME.match(self.service_account):
            raise InvalidIdentityError(f"invalid service account {self.service_account!r}")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse `spiffe://td/ns/<ns>/sa/<sa>`; raise InvalidIdentityError otherwise."""
        if not uri.startswith(SPIFFE_SCHEME):
            raise InvalidIdentityError(f"{uri!r} is not a spiffe:// URI")
        parts = uri[len(SPIFFE_SCHEME) :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise InvalidIdentityError(
                f"{uri!r} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<sa>"
            )
        return cls(parts[0], parts[2], parts[4])

    @classmethod
    def for_workload(
        cls, namespace: str, service_account: str = "", trust_domain: str = ""
    ) -> SpiffeId:
        """Build from workload-API fields, where empty means `default` / `cluster.local`."""
        return cls(trust_domain or DEFAULT_TRUST_DOMAIN, namespace, service_account or "default")

    @property
    def uri(self) -> str:
        return f"{SPIFFE_SCHEME}{self.principal}"

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy principals use: the URI without `spiffe://`."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri
