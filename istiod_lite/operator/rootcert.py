"""The mesh root certificate published into user namespaces: ConfigMap `istio-ca-root-cert`.

Called by `controller.Operator.publish_root_cert` (Mesh reconcile, waypoint Gateway reconcile,
events of the CA Secret); it observes the CA Secret, the waypoint Gateways and the existing
ConfigMaps, and applies the returned manifests with `api.apply`. Pure: bodies in, manifests out.

Why: a waypoint runs in the user's namespace and cannot mount the CA Secret of the mesh
namespace; Istio publishes `istio-ca-root-cert` (key `root-cert.pem`) into every namespace.
We publish it only into namespaces that hold a waypoint Gateway (the only pods of ours outside
the mesh namespace), which keeps the operator from writing into every namespace.

Invariants: only `ca-cert.pem` is ever read from the Secret (never the key); a ConfigMap is
ours when it carries `app.kubernetes.io/managed-by=ambient-py-operator`; one that exists and is
not ours (e.g. written by a real istiod) is left untouched and reported; ours are owned by the
Mesh (deleting it garbage-collects them) and follow the root when it changes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from istiod_lite.operator import components as c
from istiod_lite.operator.reconcile import Manifest, Owner
from istiod_lite.operator.waypoints import is_waypoint


class RootCertError(ValueError):
    """The CA Secret has no usable `ca-cert.pem` (the user's fault when they brought it)."""


@dataclass(frozen=True)
class RootCertPlan:
    objects: tuple[Manifest, ...]  # ConfigMaps to apply (create or merge-patch)
    foreign: tuple[str, ...]  # namespaces whose existing ConfigMap is not ours: left alone


def root_cert_of(secret: Mapping[str, Any]) -> str:
    """The PEM of `ca-cert.pem` in the CA Secret (the key is never read)."""
    meta = secret.get("metadata") or {}
    where = f"Secret {meta.get('namespace')}/{meta.get('name')}"
    encoded = (secret.get("data") or {}).get(c.CA_CERT_KEY)
    if not encoded:
        raise RootCertError(f"{where} has no {c.CA_CERT_KEY}; it needs the PEM root certificate")
    try:
        pem = base64.b64decode(encoded, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RootCertError(f"{where}: {c.CA_CERT_KEY} is not base64 of a PEM ({exc})") from exc
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise RootCertError(f"{where}: {c.CA_CERT_KEY} is not a PEM certificate")
    return pem


def waypoint_namespaces(gateways: Iterable[Mapping[str, Any]]) -> list[str]:
    """The namespaces that hold at least one Gateway of class istio-waypoint, sorted."""
    return sorted({g["metadata"]["namespace"] for g in gateways if is_waypoint(g)})


def is_ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(c.MANAGED_BY_LABEL) == c.MANAGED_BY


def root_cert_configmap(namespace: str, root_pem: str, owner: Owner) -> Manifest:
    """`istio-ca-root-cert` in `namespace`, as Istio publishes it, owned by the Mesh."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": c.ROOT_CERT_CONFIGMAP, "namespace": namespace,
                         "labels": {c.MANAGED_BY_LABEL: c.MANAGED_BY,
                                    c.MESH_LABEL: owner.name},
                         "ownerReferences": [owner.reference()]},
            "data": {c.ROOT_CERT_KEY: root_pem}}


def reconcile_root_certs(root_pem: str, namespaces: Iterable[str],
                         existing: Mapping[str, Mapping[str, Any] | None],
                         owner: Owner) -> RootCertPlan:
    """The ConfigMaps to apply for `namespaces`, given the live ConfigMap of each (or None)."""
    objects: list[Manifest] = []
    foreign: list[str] = []
    for ns in sorted(set(namespaces)):
        live = existing.get(ns)
        if live is not None and not is_ours(live):
            foreign.append(ns)
            continue
        objects.append(root_cert_configmap(ns, root_pem, owner))
    return RootCertPlan(tuple(objects), tuple(foreign))
