"""The mesh state `why` and `analyze` work on, built from a manifest folder (or, for `why`,
read back from a live ztunnel: `live.py` builds the same `MeshState` with `model=None`).

Called by `why` and `analyze`. `load_folder(path, ...)` reads the folder with the same code the
control plane uses (`meshcore.model.folder.scan_folder`), translates it with istiod-lite's
`istiod_lite.translate.translate` into the workload-API protos it would push, and applies them
to a fresh `meshcore.wds.Store`, the proxy-side updater ztunnel uses. So the `Snapshot` here is
what ztunnel would hold for this folder, built by the same code, not a re-implementation.

`assume_captured=True` marks pods that should be enrolled (namespace/pod labels) as captured
(`ambient.istio.io/redirection: enabled`), as the node agent would once it has run; without it
the folder is taken as is (the sandbox's folder carries the agent's pod status overlays).
"""

from __future__ import annotations

import dataclasses
import os
from types import MappingProxyType

from ambientctl.debug.errors import NotFoundError, SourceError
from istiod_lite.translate import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    MeshConfig,
    ResourceSet,
    translate,
)
from istiod_lite.translate.mesh import pod_uid, service_hostname
from istiod_lite.translate.peer_authentication import parents
from meshcore.model import (
    REDIRECTION_ANNOTATION,
    ClusterModel,
    PeerAuthentication,
    Pod,
    redirection_enabled,
    selects,
)
from meshcore.model.diagnostics import Diagnostic
from meshcore.model.folder import scan_folder
from meshcore.wds import Service, Snapshot, Store, Workload
from meshcore.wds.store import to_update


@dataclasses.dataclass(frozen=True, slots=True)
class MeshState:
    """A model, its translation and the ztunnel-side snapshot built from it.

    `model` is None when the state was read from a live ztunnel (`live.py`): then there are no
    manifests behind the snapshot (no Pods, AuthorizationPolicies, Gateways), only what ztunnel
    holds. `source` says where the state came from, for the output.
    """

    model: ClusterModel | None
    mesh: MeshConfig
    resources: ResourceSet
    snapshot: Snapshot
    diagnostics: tuple[Diagnostic, ...] = ()
    assumed_captured: tuple[str, ...] = ()  # "ns/name" of pods marked captured by us
    source: str = ""


def snapshot_of(resources: ResourceSet) -> Snapshot:
    """Apply a ResourceSet to a new Store, as one Delta xDS response per type."""
    store = Store()
    store.apply(ADDRESS_TYPE_URL,
                [to_update(name, msg) for name, msg in sorted(resources.addresses.items())])
    return store.apply(AUTHORIZATION_TYPE_URL, [
        to_update(name, msg) for name, msg in sorted(resources.authorizations.items())])


def capture_enrolled(model: ClusterModel) -> tuple[ClusterModel, tuple[str, ...]]:
    """The model with every should-be-enrolled pod annotated as captured, and their names."""
    marked = []
    for pod in model.pods:
        if redirection_enabled(pod) or not model.is_enrolled(pod):
            continue
        annotations = MappingProxyType({**pod.annotations, REDIRECTION_ANNOTATION: "enabled"})
        meta = dataclasses.replace(pod.meta, annotations=annotations)
        model = model.with_object(dataclasses.replace(pod, meta=meta))
        marked.append(f"{pod.namespace}/{pod.name}")
    return model, tuple(marked)


def build_state(model: ClusterModel, mesh: MeshConfig | None = None, *,
                assume_captured: bool = False,
                diagnostics: tuple[Diagnostic, ...] = ()) -> MeshState:
    mesh = mesh or MeshConfig(root_namespace=model.system_namespace)
    marked: tuple[str, ...] = ()
    if assume_captured:
        model, marked = capture_enrolled(model)
    resources = translate(model, mesh)
    return MeshState(model, mesh, resources, snapshot_of(resources), diagnostics, marked)


def load_folder(path: str, mesh: MeshConfig | None = None, *,
                assume_captured: bool = False) -> MeshState:
    """Read a manifest folder (with its `.status/pods` overlays) into a MeshState."""
    if not os.path.isdir(path):
        raise SourceError(f"manifest folder {path!r} does not exist or is not a directory; "
                          "pass the folder istiod-lite reads (-f DIR)")
    mesh = mesh or MeshConfig()
    folder = scan_folder(path, system_namespace=mesh.root_namespace)
    state = build_state(folder.model, mesh, assume_captured=assume_captured,
                        diagnostics=folder.diagnostics)
    how = " (pods that should be enrolled assumed captured)" if assume_captured else ""
    return dataclasses.replace(state, source=f"manifest folder {path}, translated as "
                               f"istiod-lite would{how}")


def pod_of(model: ClusterModel | None, namespace: str, name: str) -> Pod | None:
    """The Pod `namespace/name` of the model; None if absent or there is no model (live)."""
    if model is None:
        return None
    obj = model.get("Pod", namespace, name)
    return obj if isinstance(obj, Pod) else None


def effective_peer_authentication(model: ClusterModel, mesh: MeshConfig, namespace: str,
                                  name: str) -> PeerAuthentication | None:
    """The PeerAuthentication whose mode is in effect for a pod: workload, namespace, mesh."""
    pas = [p for p in model.sorted("PeerAuthentication") if isinstance(p, PeerAuthentication)]
    pod = pod_of(model, namespace, name)
    workload_level = sorted(
        (p for p in pas if p.namespace == namespace and p.selector
         and pod is not None and selects(p.selector, pod.labels)),
        key=lambda p: (p.meta.creation_timestamp, p.name))
    ns_pol, root_pol = parents(pas, namespace, mesh)
    for pa in (*workload_level[:1], ns_pol, root_pol):
        if pa is not None and pa.mode != "UNSET":
            return pa
    return None


def live_workload(state: MeshState, ns: str, name: str, role: str) -> Workload:
    """The workload `ns/name` as a live ztunnel holds it (no Pods to look at: by name);
    NotFoundError (naming the workloads of `ns`) when there is none with an IP."""
    workloads = state.snapshot.workloads
    found = workloads.get(pod_uid(state.mesh, ns, name))
    if found is None or not found.addresses:
        found = min((w for w in workloads.values()
                     if (w.namespace, w.name) == (ns, name) and w.addresses),
                    key=lambda w: w.uid, default=None)
    if found is None:
        known = ", ".join(sorted({w.name for w in workloads.values() if w.namespace == ns}))
        raise NotFoundError(f"{role}: no workload {ns}/{name} with an IP in ztunnel's state "
                            f"(workloads in {ns}: {known or 'none'}); is the pod running?")
    return found


def is_pod(state: MeshState, ns: str, name: str) -> bool:
    """Whether `ns/name` names a pod (a Pod of the model; live: a workload ztunnel holds)."""
    if state.model is not None:
        return pod_of(state.model, ns, name) is not None
    return any((w.namespace, w.name) == (ns, name) for w in state.snapshot.workloads.values())


def service_named(state: MeshState, ns: str, name: str) -> Service | None:
    """Service `ns/name`: by its hostname in this mesh, or (live) by the name ztunnel holds."""
    services = state.snapshot.services
    found = services.get(f"{ns}/{service_hostname(state.mesh, ns, name)}")
    if found is None and state.model is None:
        found = min((s for s in services.values() if (s.namespace, s.name) == (ns, name)),
                    key=lambda s: s.key, default=None)
    return found
