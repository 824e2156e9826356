"""Reading a folder of manifests into a ClusterModel, incrementally (the manifest-folder core).

Synchronous, no asyncio/trio and no logging, so both istiod_lite (asyncio wrapper:
istiod_lite.config.manifest_folder) and the CNI node agent can poll it.
`scan_folder(root, previous)` lists `*.yaml`/`*.yml` under `root` (recursively, skipping
dot-files and dot-directories) and the pod status overlays in `.status/pods/` (pod_status.py),
re-reads only files whose (mtime, size, inode) changed or that were modified in the last
`RACY_SECONDS` (timestamps are too coarse to trust for files that fresh), re-parses only files
whose bytes changed, and returns a new `FolderState` with an incrementally updated
`ClusterModel` (or `previous` itself when nothing changed), plus the current diagnostics
(`meshcore.model.diagnostics`).

Per-object last-good rules:
* a file that stops parsing as YAML keeps all its previous objects (diagnostic: file, line);
* an object that becomes invalid keeps its last good version (diagnostic: kind, ns/name,
  field); an invalid object never seen valid is left out;
* deleting a file (or an object from a file) removes those objects;
* the same object in two files: the first by path order wins, with a diagnostic;
* a pod overlay that makes its Pod invalid is ignored (the last good merged Pod stays).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import yaml

from meshcore.model import pod_status
from meshcore.model.core import ModelObject
from meshcore.model.diagnostics import Diagnostic
from meshcore.model.errors import InvalidObjectError
from meshcore.model.parse import identify, parse_object
from meshcore.model.snapshot import ClusterModel

ObjKey = tuple[str, str, str]  # (kind, namespace, name)
Stamp = tuple[int, int, int]  # (mtime_ns, size, inode)
RACY_SECONDS = 2.0
_EXTENSIONS = (".yaml", ".yml")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster


@dataclasses.dataclass(frozen=True, slots=True)
class FileState:
    """What one file contributed: its last good objects (and raw Pod docs for overlays)."""

    stamp: Stamp
    digest: bytes
    objects: Mapping[ObjKey, ModelObject]
    raw_pods: Mapping[ObjKey, Mapping[str, Any]]
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class OverlayState:
    stamp: Stamp
    digest: bytes
    patch: Mapping[str, Any]
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class FolderState:
    root: str
    files: Mapping[str, FileState]
    overlays: Mapping[tuple[str, str], OverlayState]
    objects: Mapping[ObjKey, ModelObject]
    model: ClusterModel
    diagnostics: tuple[Diagnostic, ...] = ()
    generation: int = 0
    exists: bool = False  # whether the root folder existed at the last scan
    # Pods with an overlay: (raw manifest doc, overlay patch, merged Pod), to skip re-parsing
    # a pod whose manifest and overlay are both unchanged.
    overlaid: Mapping[ObjKey, tuple[Mapping[str, Any], Mapping[str, Any], ModelObject]] = \
        dataclasses.field(default_factory=dict)


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _list_manifests(root: str) -> dict[str, Stamp]:
    found: dict[str, Stamp] = {}
    prefix = len(os.path.join(root, ""))
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.name.endswith(_EXTENSIONS) and entry.is_file():
                    found[entry.path[prefix:]] = _stamp(entry.stat())
            except FileNotFoundError:
                continue  # removed while we looked
    return found


def _list_overlays(root: str) -> dict[tuple[str, str], tuple[str, Stamp]]:
    """(ns, name) → (path relative to root, stamp) for each overlay file."""
    found: dict[tuple[str, str], tuple[str, Stamp]] = {}
    try:
        entries = sorted(os.scandir(pod_status.pod_status_dir(root)), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return found
    rel_dir = os.path.join(pod_status.STATUS_DIR, pod_status.PODS_DIR)
    for entry in entries:
        key = None if entry.name.startswith(".") else pod_status.parse_status_filename(entry.name)
        if key is None or key in found:
            continue
        try:
            found[key] = (os.path.join(rel_dir, entry.name), _stamp(entry.stat()))
        except FileNotFoundError:
            continue
    return found


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _load_documents(text: str) -> list[tuple[int, Any]]:
    """(line, document) for each YAML document; raises yaml.YAMLError."""
    loader = _Loader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            docs.append((node.start_mark.line + 1, loader.construct_document(node)))
    finally:
        loader.dispose()
    return docs


def _yaml_error(err: yaml.YAMLError, rel: str, what: str) -> Diagnostic:
    mark = getattr(err, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 0
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return Diagnostic("error", f"YAML does not parse ({problem}); {what}", rel, line)


def parse_file(rel: str, data: bytes, stamp: Stamp, previous: FileState | None) -> FileState:
    """Parse one manifest file, keeping previous versions of objects that became invalid."""
    digest = hashlib.blake2b(data, digest_size=16).digest()
    prev_objects = previous.objects if previous else {}
    prev_raw = previous.raw_pods if previous else {}
    try:
        docs = _load_documents(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        diag = (_yaml_error(err, rel, "keeping the last good objects of this file")
                if isinstance(err, yaml.YAMLError) else
                Diagnostic("error", "file is not UTF-8; keeping its last good objects", rel))
        return FileState(stamp, digest, prev_objects, prev_raw, (diag,))
    objects: dict[ObjKey, ModelObject] = {}
    raw_pods: dict[ObjKey, Mapping[str, Any]] = {}
    diags: list[Diagnostic] = []
    expanded: list[tuple[int, Any]] = []
    for line, doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(
                doc.get("items"), list):
            expanded.extend((line, item) for item in doc["items"])
        elif doc is not None:
            expanded.append((line, doc))
    for line, doc in expanded:
        try:
            obj = parse_object(doc)
        except InvalidObjectError as err:
            key = identify(doc)
            if all(key[i] for i in (0, 2)) and key in prev_objects and key not in objects:
                objects[key] = prev_objects[key]
                if key in prev_raw:
                    raw_pods[key] = prev_raw[key]
                diags.append(Diagnostic.from_error(err, f"{err}; keeping its last good version",
                                                   file=rel, line=line))
            else:
                diags.append(Diagnostic.from_error(err, f"{err}; object rejected",
                                                   file=rel, line=line))
            continue
        key = (obj.kind, obj.namespace, obj.name)
        if key in objects:
            diags.append(Diagnostic("error", f"{obj.kind} {_ref(key)} is defined twice in this "
                                    "file; using the first", rel, line, *key))
            continue
        objects[key] = obj
        if obj.kind == "Pod":
            raw_pods[key] = doc
    return FileState(stamp, digest, MappingProxyType(objects), MappingProxyType(raw_pods),
                     tuple(diags))


def _ref(key: ObjKey) -> str:
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


def _parse_overlay(rel: str, data: bytes, stamp: Stamp, previous: OverlayState | None
                   ) -> OverlayState:
    digest = hashlib.blake2b(data, digest_size=16).digest()
    try:
        patch = yaml.load(data.decode("utf-8"), Loader=_Loader) or {}  # a safe loader
        if not isinstance(patch, Mapping):
            raise yaml.YAMLError("the overlay must be a mapping")
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        diag = (_yaml_error(err, rel, "keeping the previous pod status")
                if isinstance(err, yaml.YAMLError)
                else Diagnostic("error", "overlay is not UTF-8; keeping the previous status", rel))
        return OverlayState(stamp, digest, previous.patch if previous else {}, (diag,))
    return OverlayState(stamp, digest, patch)


def _refresh(path: str, rel: str, stamp: Stamp, prev: Any, now: float,
             parse: Callable[[str, bytes, Stamp, Any], Any]) -> tuple[Any, bool]:
    """(state, changed) for one file, reading it only when its stamp says it may differ."""
    racy = now - stamp[0] / 1e9 < RACY_SECONDS
    if prev is not None and prev.stamp == stamp and not racy:
        return prev, False
    data = _read(path)
    if data is None:
        return None, prev is not None
    digest = hashlib.blake2b(data, digest_size=16).digest()
    if prev is not None and prev.digest == digest:
        return (dataclasses.replace(prev, stamp=stamp) if prev.stamp != stamp else prev), False
    return parse(rel, data, stamp, prev), True


def scan_folder(root: str | os.PathLike[str], previous: FolderState | None = None, *,
                system_namespace: str = "istio-system", now: float | None = None) -> FolderState:
    """One poll: return `previous` if nothing changed, else the new state (pure apart from
    reading the folder)."""
    root = os.fspath(root)
    prev = previous if previous is not None and previous.root == root else FolderState(
        root, {}, {}, {}, ClusterModel(system_namespace=system_namespace))
    now = time.time() if now is None else now
    exists = os.path.isdir(root)
    changed = previous is None or exists != prev.exists
    files: dict[str, FileState] = {}
    for rel, stamp in sorted(_list_manifests(root).items()):
        state, did = _refresh(os.path.join(root, rel), rel, stamp, prev.files.get(rel), now,
                              parse_file)
        changed |= did
        if state is not None:
            files[rel] = state
    changed |= set(files) != set(prev.files)
    overlays: dict[tuple[str, str], OverlayState] = {}
    for key, (rel, stamp) in _list_overlays(root).items():
        state, did = _refresh(os.path.join(root, rel), rel, stamp, prev.overlays.get(key), now,
                              _parse_overlay)
        changed |= did
        if state is not None:
            overlays[key] = state
    changed |= set(overlays) != set(prev.overlays)
    if not changed:
        return prev
    return _merge(root, prev, files, overlays, exists)


def _merge(root: str, prev: FolderState, files: dict[str, FileState],
           overlays: dict[tuple[str, str], OverlayState], exists: bool) -> FolderState:
    diags: list[Diagnostic] = []
    if not exists:
        diags.append(Diagnostic("error", f"manifest folder {root} does not exist (or is not a "
                                "directory); serving an empty model until it appears"))
    merged: dict[ObjKey, ModelObject] = {}
    owner: dict[ObjKey, str] = {}
    for rel in sorted(files):
        fs = files[rel]
        diags.extend(fs.diagnostics)
        for key, obj in fs.objects.items():
            if key in merged:
                diags.append(Diagnostic("error", f"{key[0]} {_ref(key)} is also defined in "
                                        f"{owner[key]}; using that one", rel, 0, *key))
                continue
            merged[key], owner[key] = obj, rel
    overlaid: dict[ObjKey, tuple[Mapping[str, Any], Mapping[str, Any], ModelObject]] = {}
    for (ns, name), ov in sorted(overlays.items()):
        diags.extend(ov.diagnostics)
        key = ("Pod", ns, name)
        raw = files[owner[key]].raw_pods.get(key) if key in owner else None
        if raw is None or not ov.patch:
            continue
        cached = prev.overlaid.get(key)
        if cached is not None and cached[0] is raw and cached[1] is ov.patch:
            merged[key] = cached[2]
            overlaid[key] = cached
            continue
        try:
            merged[key] = parse_object(pod_status.merge_patch(raw, ov.patch))
            overlaid[key] = (raw, ov.patch, merged[key])
        except InvalidObjectError as err:
            rel = os.path.relpath(pod_status.pod_status_path(root, ns, name), root)
            if key in prev.objects:
                merged[key] = prev.objects[key]
            diags.append(Diagnostic.from_error(err, f"{err}; pod status overlay ignored",
                                               file=rel))
    model = prev.model
    for key in prev.objects.keys() - merged.keys():
        model = model.without(*key)
    for key, obj in merged.items():
        if prev.objects.get(key) is not obj:
            model = model.with_object(obj)
    return FolderState(root, MappingProxyType(files), MappingProxyType(overlays),
                       MappingProxyType(merged), model, tuple(diags), prev.generation + 1,
                       exists, MappingProxyType(overlaid))
