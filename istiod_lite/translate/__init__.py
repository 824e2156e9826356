"""Model → Istio workload API (`istio.workload.Address`, `istio.security.Authorization`).

Pure functions; the entry point is `translate(model, mesh_config) -> ResourceSet`. See
docs/control-plane-model.md for naming and the conversion rules.
"""

from istiod_lite.translate.mesh import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    MeshConfig,
    StatusMessage,
)
from istiod_lite.translate.render import render
from istiod_lite.translate.translator import ResourceSet, translate

__all__ = ["ADDRESS_TYPE_URL", "AUTHORIZATION_TYPE_URL", "MeshConfig", "ResourceSet",
           "StatusMessage", "render", "translate"]
