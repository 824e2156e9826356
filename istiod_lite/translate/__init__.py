"""Model → Istio workload API (`istio.workload.Address`, `istio.security.Authorization`).

Pure functions; the entry point is `translate(model, mesh_config) -> ResourceSet`;
`IncrementalTranslator().translate(model, mesh_config)` gives the same result and reuses the
message objects of resources whose inputs did not change since its previous call. See
docs/control-plane-model.md for naming and the conversion rules.
"""

from istiod_lite.translate.memo import MemoStats
from istiod_lite.translate.mesh import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    MeshConfig,
    StatusMessage,
)
from istiod_lite.translate.render import render
from istiod_lite.translate.translator import (
    IncrementalTranslator,
    ResourceSet,
    translate,
    translate_incremental,
)

__all__ = ["ADDRESS_TYPE_URL", "AUTHORIZATION_TYPE_URL", "IncrementalTranslator", "MemoStats",
           "MeshConfig", "ResourceSet", "StatusMessage", "render", "translate",
           "translate_incremental"]
