"""Desired objects for a Mesh: control plane, ztunnel DaemonSet, CNI node agent DaemonSet, RBAC.

Called by the kopf handlers (`handlers.py`) after `spec.parse_mesh_spec` accepted the spec;
they hand the result to `api.apply` (create or merge-patch, in order). Pure: MeshSpec in,
manifests out. The CA Secret is not here: it is created once (never overwritten) by
`ca_secret`, from a root the handler generates, because a reconciler must not invent keys.

Invariants: every object carries the Mesh's controller owner reference (so deleting the Mesh
garbage-collects everything) and `app.kubernetes.io/managed-by=ambient-py-operator`; the ztunnel
DaemonSet is `OnDelete` (the rollout in `rollout.py` picks the order) and its pod template
carries `ambient-py.io/version`; container command lines come only from `components`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from istiod_lite.operator import components as c
from istiod_lite.operator.spec import Component, MeshSpec

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The Mesh object that owns everything we create."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": f"{c.GROUP}/{c.VERSION}", "kind": c.MESH_KIND, "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}


def reconcile_mesh(mesh: MeshSpec, owner: Owner) -> list[Manifest]:
    """Every object the mesh needs, in apply order (RBAC before workloads)."""
    return [*istiod_objects(mesh, owner), *ztunnel_objects(mesh, owner),
            *cni_objects(mesh, owner)]


def namespace(mesh: MeshSpec) -> Manifest:
    """The system namespace (created if missing, never owned: it may hold other things)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": mesh.namespace, "labels": {c.MANAGED_BY_LABEL: c.MANAGED_BY}}}


def ca_secret(mesh: MeshSpec, owner: Owner, cert_pem: bytes, key_pem: bytes) -> Manifest:
    """The CA root Secret in the `istio-ca-secret` layout (istiod_lite.ca.roots reads it)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
            "metadata": _meta(c.CA_SECRET_NAME, mesh, owner, "istiod-lite"),
            "data": {c.CA_CERT_KEY: base64.b64encode(cert_pem).decode(),
                     c.CA_KEY_KEY: base64.b64encode(key_pem).decode()}}


def istiod_objects(mesh: MeshSpec, owner: Owner) -> list[Manifest]:
    name, labels = c.ISTIOD_NAME, {"app": c.ISTIOD_NAME}
    rules = [
        _rule("", ["pods", "services", "namespaces", "nodes", "endpoints"],
              ["get", "list", "watch"]),
        _rule("discovery.k8s.io", ["endpointslices"], ["get", "list", "watch"]),
        _rule("security.istio.io", ["authorizationpolicies", "peerauthentications"],
              ["get", "list", "watch"]),
        _rule("security.istio.io", ["authorizationpolicies/status", "peerauthentications/status"],
              ["patch", "update"]),
        _rule("gateway.networking.k8s.io", ["gateways", "httproutes", "grpcroutes"],
              ["get", "list", "watch"]),
        _rule("gateway.networking.k8s.io", ["httproutes/status", "grpcroutes/status"],
              ["patch", "update"]),
        _rule("", ["events"], ["create", "patch"]),
        _rule("authentication.k8s.io", ["tokenreviews"], ["create"]),
    ]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, mesh, owner, name),
        "spec": {
            "replicas": mesh.istiod_replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, c.VERSION_LABEL: mesh.istiod.version,
                                        "sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1337,
                                        "runAsGroup": 1337},
                    "containers": [{
                        **_container("discovery", mesh, mesh.istiod),
                        "command": c.istiod_command(namespace=mesh.namespace,
                                                    trust_domain=mesh.trust_domain,
                                                    log_level=mesh.istiod.log_level),
                        "ports": [_port("grpc-xds", c.ISTIOD_GRPC_PORT),
                                  _port("http-ready", c.ISTIOD_READY_PORT)],
                        "readinessProbe": _http_probe("/ready", c.ISTIOD_READY_PORT),
                        "volumeMounts": [{"name": "ca", "mountPath": c.CA_MOUNT,
                                          "readOnly": True}],
                        "securityContext": _restricted(),
                    }],
                    "volumes": [{"name": "ca", "secret": {"secretName": c.CA_SECRET_NAME}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, mesh, owner, name),
        "spec": {"selector": labels,
                 "ports": [{"name": "grpc-xds", "port": c.ISTIOD_GRPC_PORT,
                            "targetPort": c.ISTIOD_GRPC_PORT, "protocol": "TCP"}]},
    }
    return [*_rbac(name, mesh, owner, rules, cluster=True), deployment, service]


def ztunnel_objects(mesh: MeshSpec, owner: Owner) -> list[Manifest]:
    name, labels = c.ZTUNNEL_NAME, {"app": c.ZTUNNEL_NAME}
    # ztunnel patches its own pod's zds-synced annotation (rollout readiness signal).
    rules = [_rule("", ["pods"], ["get", "patch"])]
    env = [_field_env("POD_NAME", "metadata.name"),
           _field_env("POD_NAMESPACE", "metadata.namespace"),
           _field_env("NODE_NAME", "spec.nodeName"),
           _field_env("INSTANCE_IP", "status.podIP")]
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": _meta(name, mesh, owner, name),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "OnDelete"},
            "template": {
                "metadata": {"labels": {**labels, c.VERSION_LABEL: mesh.ztunnel.version,
                                        "sidecar.istio.io/inject": "false",
                                        "istio.io/dataplane-mode": "none"}},
                "spec": {
                    "serviceAccountName": name,
                    "hostNetwork": True,  # DESIGN.md §2; Istio's own ztunnel uses pod network
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "terminationGracePeriodSeconds": 30,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        **_container("istio-proxy", mesh, mesh.ztunnel),
                        "command": c.ztunnel_command(namespace=mesh.namespace,
                                                     trust_domain=mesh.trust_domain,
                                                     log_level=mesh.ztunnel.log_level),
                        "env": env,
                        "ports": [_port("ztunnel-stats", c.ZTUNNEL_METRICS_PORT),
                                  _port("ztunnel-ready", c.ZTUNNEL_READY_PORT)],
                        "readinessProbe": _http_probe("/healthz/ready", c.ZTUNNEL_READY_PORT),
                        "securityContext": {
                            "privileged": False, "readOnlyRootFilesystem": True,
                            "runAsUser": 0, "runAsGroup": 1337, "runAsNonRoot": False,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"],
                                             "add": list(c.ZTUNNEL_CAPABILITIES)}},
                        "volumeMounts": [
                            {"name": "cni-ztunnel-sock-dir", "mountPath": c.ZDS_HOST_DIR},
                            {"name": "istio-token", "mountPath": c.TOKEN_DIR},
                            {"name": "istio-root", "mountPath": c.ROOT_CERT_DIR,
                             "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [
                        {"name": "cni-ztunnel-sock-dir",
                         "hostPath": {"path": c.ZDS_HOST_DIR, "type": "DirectoryOrCreate"}},
                        _token_volume(),
                        # Only the root certificate of the CA Secret, never its key.
                        {"name": "istio-root", "secret": {
                            "secretName": c.CA_SECRET_NAME,
                            "items": [{"key": c.CA_CERT_KEY, "path": "root-cert.pem"}]}},
                        {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    return [*_rbac(name, mesh, owner, rules, cluster=False), daemonset]


def cni_objects(mesh: MeshSpec, owner: Owner) -> list[Manifest]:
    name, labels = c.CNI_NAME, {"app": c.CNI_NAME}
    rules = [_rule("", ["pods"], ["get", "list", "watch", "patch"]),
             # The agent marks enrollment on the status subresource, as Istio's does.
             _rule("", ["pods/status"], ["patch"]),
             _rule("", ["namespaces"], ["get", "list", "watch"])]
    mounts = [{"name": "cni-bin-dir", "mountPath": c.CNI_BIN_MOUNT},
              {"name": "cni-net-dir", "mountPath": c.CNI_CONF_MOUNT}]
    caps = {"drop": ["ALL"], "add": list(c.CNI_CAPABILITIES)}
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": _meta(name, mesh, owner, name),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {**labels, c.VERSION_LABEL: mesh.cni.version,
                                        "sidecar.istio.io/inject": "false",
                                        "istio.io/dataplane-mode": "none"}},
                "spec": {
                    "serviceAccountName": name,
                    "hostNetwork": True,
                    "hostPID": True,  # the agent opens pods' netns by /proc/<pid>/ns/net
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "terminationGracePeriodSeconds": 30,  # time to uninstall the plugin
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [{
                        **_container("install-cni", mesh, mesh.cni),
                        "command": c.cni_install_command(),
                        "volumeMounts": [*mounts, {"name": "cni-runtime-dir",
                                                   "mountPath": c.CNI_RUNTIME_MOUNT}],
                        "securityContext": {"runAsUser": 0, "capabilities": {"drop": ["ALL"]}},
                    }],
                    "containers": [{
                        **_container("cni-agent", mesh, mesh.cni),
                        "command": c.cni_agent_command(namespace=mesh.namespace,
                                                       log_level=mesh.cni.log_level),
                        "env": [_field_env("NODE_NAME", "spec.nodeName"),
                                _field_env("POD_NAMESPACE", "metadata.namespace")],
                        "readinessProbe": _http_probe("/readyz", c.CNI_HEALTH_PORT),
                        "securityContext": {"privileged": False, "runAsUser": 0,
                                            "runAsNonRoot": False, "capabilities": caps},
                        "volumeMounts": [
                            *mounts,
                            {"name": "cni-ztunnel-sock-dir", "mountPath": c.ZDS_HOST_DIR},
                            {"name": "cni-run-dir", "mountPath": c.CNI_RUN_DIR},
                            {"name": "host-netns", "mountPath": "/var/run/netns",
                             "mountPropagation": "HostToContainer"}],
                    }],
                    "volumes": [
                        _host_dir("cni-bin-dir", mesh.cni_bin_dir),
                        _host_dir("cni-net-dir", mesh.cni_conf_dir),
                        _host_dir("cni-runtime-dir", c.CNI_HOST_RUNTIME_DIR),
                        _host_dir("cni-ztunnel-sock-dir", c.ZDS_HOST_DIR),
                        _host_dir("cni-run-dir", c.CNI_RUN_DIR),
                        _host_dir("host-netns", "/var/run/netns")],
                },
            },
        },
    }
    return [*_rbac(name, mesh, owner, rules, cluster=True), daemonset]


# -- helpers -------------------------------------------------------------------------------------
def _meta(name: str, mesh: MeshSpec, owner: Owner, app: str, *,
          namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app": app, c.MANAGED_BY_LABEL: c.MANAGED_BY, c.MESH_LABEL: owner.name},
        "ownerReferences": [owner.reference()]}
    if namespaced:
        meta["namespace"] = mesh.namespace
    return meta


def _rbac(name: str, mesh: MeshSpec, owner: Owner, rules: list[dict[str, Any]], *,
          cluster: bool) -> list[Manifest]:
    """ServiceAccount + (Cluster)Role + binding, all named `name`."""
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, mesh, owner, name)}
    role_kind = "ClusterRole" if cluster else "Role"
    rbac_name = f"{name}-{mesh.namespace}" if cluster else name
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role_kind,
            "metadata": _meta(rbac_name, mesh, owner, name, namespaced=not cluster),
            "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{role_kind}Binding",
               "metadata": _meta(rbac_name, mesh, owner, name, namespaced=not cluster),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                           "name": rbac_name},
               "subjects": [{"kind": "ServiceAccount", "name": name,
                             "namespace": mesh.namespace}]}
    return [sa, role, binding]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def _container(name: str, mesh: MeshSpec, comp: Component) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": comp.image,
                           "imagePullPolicy": mesh.image_pull_policy}
    resources = comp.resources.manifest()
    if resources:
        out["resources"] = resources
    return out


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "containerPort": port, "protocol": "TCP"}


def _http_probe(path: str, port: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 5,
            "failureThreshold": 3, "timeoutSeconds": 2}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _host_dir(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}}


def _token_volume() -> dict[str, Any]:
    return {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
        "audience": c.TOKEN_AUDIENCE, "expirationSeconds": c.TOKEN_SECONDS,
        "path": "istio-token"}}]}}


def _restricted() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def token_volume() -> dict[str, Any]:
    """The projected `istio-ca` token volume (shared with the waypoint Deployment)."""
    return _token_volume()


def restricted_security_context() -> dict[str, Any]:
    return _restricted()


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """(apiVersion, kind, namespace, name) of a manifest."""
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]
