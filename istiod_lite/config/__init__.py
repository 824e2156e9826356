"""Config sources for istiod_lite: each yields immutable `ClusterModel` snapshots.

The manifest-folder source lives here (manifest_folder.py: the asyncio wrapper around the
sync core in meshcore.model.folder, which the CNI node agent can use directly); the Kubernetes
source implements the same `ConfigSource` protocol (source.py). The pod status overlay writer
(`write_pod_status`) is meshcore.model.pod_status, re-exported here.
"""

from istiod_lite.config.manifest_folder import (
    FolderState,
    ManifestFolderSource,
    scan_folder,
)
from istiod_lite.config.source import ConfigSnapshot, ConfigSource
from meshcore.model.diagnostics import Diagnostic
from meshcore.model.pod_status import remove_pod_status, write_pod_status

__all__ = ["ConfigSnapshot", "ConfigSource", "Diagnostic", "FolderState",
           "ManifestFolderSource", "remove_pod_status", "scan_folder", "write_pod_status"]
