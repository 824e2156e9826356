"""The pod status overlay of the manifest folder: `<dir>/.status/pods/<ns>.<name>.yaml`.

Node agents and the sandbox write what Kubernetes would normally fill in (pod IP, node name,
Ready, the `ambient.istio.io/redirection` annotation) with `write_pod_status`; the folder
source merges each overlay onto the Pod of the same namespace/name with JSON merge-patch
semantics (RFC 7386: maps merge, `null` deletes, lists replace). Writes are atomic (temporary
file + rename) and serialised with an flock, so several writers can share a folder.
Namespaces cannot contain dots, so `<ns>.<name>` splits unambiguously at the first dot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

STATUS_DIR = ".status"
PODS_DIR = "pods"


def pod_status_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / STATUS_DIR / PODS_DIR


def pod_status_path(root: str | os.PathLike[str], namespace: str, name: str) -> Path:
    return pod_status_dir(root) / f"{namespace}.{name}.yaml"


def parse_status_filename(filename: str) -> tuple[str, str] | None:
    """`shop.web-1.yaml` → ("shop", "web-1"); None if the name is not an overlay file."""
    stem, dot, ext = filename.rpartition(".")
    if not dot or ext not in ("yaml", "yml"):
        return None
    ns, dot, name = stem.partition(".")
    return (ns, name) if dot and ns and name else None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value and never mutates its inputs."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_pod_status(
    root: str | os.PathLike[str],
    namespace: str,
    name: str,
    *,
    pod_ip: str | None = None,
    node: str | None = None,
    annotations: Mapping[str, str] | None = None,
    remove_annotations: Iterable[str] = (),
    ready: bool | None = None,
    phase: str | None = None,
) -> Path:
    """Update the overlay of one pod (only the given parts change); returns its path."""
    path = pod_status_path(root, namespace, name)
    with _locked(path.parent):
        try:
            current = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            current = {}
        if not isinstance(current, dict):
            current = {}
        patch: dict[str, Any] = {}
        if pod_ip is not None:
            patch.setdefault("status", {}).update({"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]})
        if phase is not None:
            patch.setdefault("status", {})["phase"] = phase
        if ready is not None:
            patch.setdefault("status", {})["conditions"] = [
                {"type": "Ready", "status": "True" if ready else "False"}]
        if node is not None:
            patch.setdefault("spec", {})["nodeName"] = node
        ann: dict[str, Any] = dict(annotations or {})
        for key in remove_annotations:
            ann[key] = None  # kept as null so the merge deletes it from the manifest's pod too
        if ann:
            patch.setdefault("metadata", {})["annotations"] = ann
        updated = _merge_overlay(current, patch)
        _atomic_write(path, yaml.safe_dump(updated, sort_keys=True))
    return path


def _merge_overlay(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Like merge_patch, but keeps nulls under metadata.annotations (they are deletions to
    apply later, onto the Pod)."""
    out = dict(current)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge_overlay(out[key], value)
        else:
            out[key] = value
    return out


def remove_pod_status(root: str | os.PathLike[str], namespace: str, name: str) -> None:
    """Delete a pod's overlay (e.g. when the pod is gone); no error if there is none."""
    path = pod_status_path(root, namespace, name)
    with _locked(path.parent), contextlib.suppress(FileNotFoundError):
        path.unlink()
