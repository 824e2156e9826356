"""Tests for the manifest-folder source: scanning, last-good semantics, the pod status overlay.

They drive `scan_folder` directly on a tmp_path (no sleeps); one test runs the asyncio
watcher with a deadline.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from istiod_lite.config import (
    ManifestFolderSource,
    remove_pod_status,
    scan_folder,
    write_pod_status,
)
from istiod_lite.translate import translate
from meshcore.model import Pod
from meshcore.model.pod_status import merge_patch, pod_status_path


def pod_doc(name: str, ns: str = "shop", ip: str | None = "10.0.0.1", **labels: str) -> dict:
    doc: dict = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": name, "namespace": ns, "labels": labels},
                 "spec": {"containers": [{"name": "app"}]}}
    if ip:
        doc["status"] = {"podIP": ip}
    return doc


def svc_doc(name: str, ns: str = "shop", ports: list | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "clusterIP": "10.96.0.1",
                     "ports": ports or [{"name": "http", "port": 80}]}}


def ap_doc(name: str, action: str = "ALLOW", ns: str = "shop") -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": {"action": action}}


def write(path: Path, *docs: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))


def names(state, kind: str = "Pod") -> list[str]:
    return [o.name for o in state.model.sorted(kind)]


def test_loads_multi_document_files_recursively(tmp_path: Path) -> None:
    """All *.yaml/*.yml under the folder load; dot-files and dot-directories are skipped."""
    write(tmp_path / "a.yaml", pod_doc("a"), svc_doc("a"))
    write(tmp_path / "sub" / "b.yml", pod_doc("b"))
    write(tmp_path / ".hidden" / "c.yaml", pod_doc("c"))
    write(tmp_path / "notes.txt", pod_doc("d"))
    state = scan_folder(tmp_path)
    assert names(state) == ["a", "b"]
    assert names(state, "Service") == ["a"]
    assert state.diagnostics == ()


def test_kind_list_documents_are_expanded(tmp_path: Path) -> None:
    """A `kind: List` document contributes each of its items."""
    write(tmp_path / "list.yaml", {"apiVersion": "v1", "kind": "List",
                                    "items": [pod_doc("a"), pod_doc("b")]})
    assert names(scan_folder(tmp_path)) == ["a", "b"]


def test_no_change_returns_the_same_state(tmp_path: Path) -> None:
    """A scan that finds nothing new returns the previous state object itself."""
    write(tmp_path / "a.yaml", pod_doc("a"))
    first = scan_folder(tmp_path)
    assert scan_folder(tmp_path, first) is first
    # Re-writing identical bytes is not a change either.
    write(tmp_path / "a.yaml", pod_doc("a"))
    assert scan_folder(tmp_path, first) is first


def test_edit_new_file_and_delete(tmp_path: Path) -> None:
    """Edits, new files and deletions show up in the next scan; untouched files are reused."""
    write(tmp_path / "a.yaml", pod_doc("a"))
    write(tmp_path / "b.yaml", pod_doc("b"))
    s1 = scan_folder(tmp_path)
    write(tmp_path / "a.yaml", pod_doc("a", ip="10.0.0.2"))
    s2 = scan_folder(tmp_path, s1)
    pod_a = s2.model.get("Pod", "shop", "a")
    assert isinstance(pod_a, Pod) and pod_a.pod_ips == ("10.0.0.2",)
    assert s2.files["b.yaml"] is s1.files["b.yaml"]
    assert s2.model.get("Pod", "shop", "b") is s1.model.get("Pod", "shop", "b")
    write(tmp_path / "c.yaml", pod_doc("c"))
    s3 = scan_folder(tmp_path, s2)
    assert names(s3) == ["a", "b", "c"]
    (tmp_path / "b.yaml").unlink()
    s4 = scan_folder(tmp_path, s3)
    assert names(s4) == ["a", "c"]
    assert s4.generation > s3.generation > s2.generation


def test_removing_an_object_from_a_file_removes_it(tmp_path: Path) -> None:
    """A document deleted from a multi-document file disappears from the model."""
    write(tmp_path / "a.yaml", pod_doc("a"), pod_doc("b"))
    s1 = scan_folder(tmp_path)
    write(tmp_path / "a.yaml", pod_doc("a"))
    assert names(scan_folder(tmp_path, s1)) == ["a"]


def test_yaml_error_keeps_last_good_objects_then_recovers(tmp_path: Path) -> None:
    """A file that stops parsing keeps its objects; the diagnostic names file and line."""
    write(tmp_path / "a.yaml", pod_doc("a"), pod_doc("b"))
    s1 = scan_folder(tmp_path)
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n")
    s2 = scan_folder(tmp_path, s1)
    assert names(s2) == ["a", "b"]
    (diag,) = s2.diagnostics
    assert diag.file == "a.yaml" and diag.line == 4 and "YAML does not parse" in diag.message
    assert "a.yaml:4:" in str(diag)
    write(tmp_path / "a.yaml", pod_doc("a"))
    s3 = scan_folder(tmp_path, s2)
    assert names(s3) == ["a"] and s3.diagnostics == ()


def test_invalid_object_keeps_its_last_good_version(tmp_path: Path) -> None:
    """An object that becomes invalid keeps its previous version; its neighbours update."""
    write(tmp_path / "a.yaml", ap_doc("deny-all", "DENY"), pod_doc("a"))
    s1 = scan_folder(tmp_path)
    write(tmp_path / "a.yaml", ap_doc("deny-all", "ALLOWW"), pod_doc("a", ip="10.0.0.9"))
    s2 = scan_folder(tmp_path, s1)
    ap = s2.model.get("AuthorizationPolicy", "shop", "deny-all")
    assert ap is s1.model.get("AuthorizationPolicy", "shop", "deny-all")
    pod_a = s2.model.get("Pod", "shop", "a")
    assert isinstance(pod_a, Pod) and pod_a.pod_ips == ("10.0.0.9",)
    (diag,) = s2.diagnostics
    assert (diag.kind, diag.namespace, diag.name, diag.field) == (
        "AuthorizationPolicy", "shop", "deny-all", "spec.action")
    assert diag.file == "a.yaml" and diag.line == 1
    assert "keeping its last good version" in diag.message


def test_invalid_object_never_valid_is_left_out(tmp_path: Path) -> None:
    """An object that was never valid is rejected; the rest of the file still loads."""
    write(tmp_path / "a.yaml", svc_doc("dup", ports=[{"name": "a", "port": 80},
                                                     {"name": "b", "port": 80}]), pod_doc("a"))
    state = scan_folder(tmp_path)
    assert names(state, "Service") == [] and names(state) == ["a"]
    (diag,) = state.diagnostics
    assert diag.field == "spec.ports[1].port" and "object rejected" in diag.message


def test_same_object_in_two_files_first_path_wins(tmp_path: Path) -> None:
    """Duplicates across files: the first file in path order wins, with a diagnostic."""
    write(tmp_path / "b.yaml", pod_doc("a", ip="10.0.0.2"))
    write(tmp_path / "a.yaml", pod_doc("a", ip="10.0.0.1"))
    state = scan_folder(tmp_path)
    pod_a = state.model.get("Pod", "shop", "a")
    assert isinstance(pod_a, Pod) and pod_a.pod_ips == ("10.0.0.1",)
    (diag,) = state.diagnostics
    assert diag.file == "b.yaml" and "also defined in a.yaml" in diag.message


def test_bad_inputs_from_the_issue_leave_the_rest_flowing(tmp_path: Path) -> None:
    """Unknown policy value, duplicate service port, pod without IP and unparsable YAML are
    each reported with kind/name/field (or file/line) while good config still translates."""
    write(tmp_path / "good.yaml", pod_doc("web", app="web"), svc_doc("web"))
    write(tmp_path / "bad.yaml", ap_doc("deny-all", "ALLOWW"),
          svc_doc("dup", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
          pod_doc("pending", ip=None))
    (tmp_path / "broken.yaml").write_text("kind: Pod\nmetadata: {name: x\n")
    state = scan_folder(tmp_path)
    messages = sorted(str(d) for d in state.diagnostics)
    assert any("AuthorizationPolicy shop/deny-all: spec.action" in m for m in messages)
    assert any("Service shop/dup: spec.ports[1].port: duplicate port 80/TCP" in m
               for m in messages)
    assert any(m.startswith("broken.yaml:") and "YAML does not parse" in m for m in messages)
    resources = translate(state.model)
    assert "Kubernetes//Pod/shop/web" in resources.addresses
    assert "shop/web.shop.svc.cluster.local" in resources.addresses
    (no_ip,) = [s for s in resources.statuses if s.name == "pending"]
    assert (no_ip.kind, no_ip.field) == ("Pod", "status.podIP")


def test_pod_status_overlay_merges_and_removes(tmp_path: Path) -> None:
    """write_pod_status sets IP/node/annotations on the Pod; removals and deletes revert."""
    base = pod_doc("a", ip=None)
    base["metadata"]["annotations"] = {"owner": "me", "ambient.istio.io/redirection": "pending"}
    write(tmp_path / "a.yaml", base)
    s1 = scan_folder(tmp_path)
    path = write_pod_status(tmp_path, "shop", "a", pod_ip="10.244.0.5", node="node-1",
                            annotations={"ambient.istio.io/redirection": "enabled"}, ready=True)
    assert path == pod_status_path(tmp_path, "shop", "a")
    s2 = scan_folder(tmp_path, s1)
    pod = s2.model.get("Pod", "shop", "a")
    assert isinstance(pod, Pod)
    assert (pod.pod_ips, pod.node_name, pod.ready) == (("10.244.0.5",), "node-1", True)
    assert dict(pod.annotations) == {"owner": "me", "ambient.istio.io/redirection": "enabled"}
    write_pod_status(tmp_path, "shop", "a", remove_annotations=["ambient.istio.io/redirection"])
    s3 = scan_folder(tmp_path, s2)
    pod = s3.model.get("Pod", "shop", "a")
    assert isinstance(pod, Pod)
    assert dict(pod.annotations) == {"owner": "me"}  # removed even though the manifest has it
    assert pod.pod_ips == ("10.244.0.5",)  # untouched parts of the overlay stay
    remove_pod_status(tmp_path, "shop", "a")
    pod = scan_folder(tmp_path, s3).model.get("Pod", "shop", "a")
    assert isinstance(pod, Pod) and pod.pod_ips == ()


def test_unrelated_changes_reuse_overlaid_pods(tmp_path: Path) -> None:
    """A change elsewhere neither re-parses nor replaces a pod whose overlay is unchanged."""
    write(tmp_path / "a.yaml", pod_doc("a", ip=None))
    write_pod_status(tmp_path, "shop", "a", pod_ip="10.0.0.5")
    s1 = scan_folder(tmp_path)
    write(tmp_path / "b.yaml", pod_doc("b"))
    s2 = scan_folder(tmp_path, s1)
    assert s2 is not s1
    assert s2.model.get("Pod", "shop", "a") is s1.model.get("Pod", "shop", "a")


def test_overlay_for_unknown_pod_is_ignored_and_applies_when_pod_appears(tmp_path: Path) -> None:
    """An overlay written before its Pod manifest applies once the Pod exists."""
    write_pod_status(tmp_path, "shop", "later", pod_ip="10.0.0.7")
    s1 = scan_folder(tmp_path)
    assert names(s1) == [] and s1.diagnostics == ()
    write(tmp_path / "later.yaml", pod_doc("later", ip=None))
    pod = scan_folder(tmp_path, s1).model.get("Pod", "shop", "later")
    assert isinstance(pod, Pod) and pod.pod_ips == ("10.0.0.7",)


def test_bad_overlays_keep_the_last_good_pod(tmp_path: Path) -> None:
    """An overlay that does not parse, or makes the Pod invalid, is reported and ignored."""
    write(tmp_path / "a.yaml", pod_doc("a", ip=None))
    write_pod_status(tmp_path, "shop", "a", pod_ip="10.0.0.5")
    s1 = scan_folder(tmp_path)
    good = s1.model.get("Pod", "shop", "a")
    write_pod_status(tmp_path, "shop", "a", pod_ip="10.0.0.500")
    s2 = scan_folder(tmp_path, s1)
    assert s2.model.get("Pod", "shop", "a") is good
    (diag,) = s2.diagnostics
    assert diag.field == "status.podIPs[0].ip" and "overlay ignored" in diag.message
    pod_status_path(tmp_path, "shop", "a").write_text("status: {podIP: [\n")
    s3 = scan_folder(tmp_path, s2)
    assert s3.model.get("Pod", "shop", "a") is good
    assert any("YAML does not parse" in d.message for d in s3.diagnostics)


def test_missing_folder_gives_an_empty_model(tmp_path: Path) -> None:
    """A folder that does not exist yet yields an empty model, then loads once created."""
    root = tmp_path / "later"
    source = ManifestFolderSource(root)
    assert len(source.snapshot.model) == 0
    (missing,) = source.snapshot.diagnostics
    assert "does not exist" in missing.message
    write(root / "a.yaml", pod_doc("a"))
    assert source.scan() is True
    assert [p.name for p in source.snapshot.model.pods] == ["a"]
    assert source.snapshot.diagnostics == ()
    assert source.scan() is False


def test_merge_patch_semantics() -> None:
    """Overlay merging follows RFC 7386: maps merge, null deletes, lists replace."""
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "k": None}) == {
        "a": {"c": 2, "d": 3}, "l": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}  # input untouched


def test_writer_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    """The writer replaces the overlay in one rename and cleans up after itself."""
    for i in range(5):
        write_pod_status(tmp_path, "shop", "a", pod_ip=f"10.0.0.{i + 1}")
    directory = pod_status_path(tmp_path, "shop", "a").parent
    assert sorted(n for n in os.listdir(directory) if not n.startswith(".lock")) == [
        "shop.a.yaml"]
    data = yaml.safe_load(pod_status_path(tmp_path, "shop", "a").read_text())
    assert data["status"]["podIP"] == "10.0.0.5"


@pytest.mark.asyncio
async def test_async_watch_yields_initial_and_changed_snapshots(tmp_path: Path) -> None:
    """watch() yields the current snapshot, then a new one after a file changes."""
    write(tmp_path / "a.yaml", pod_doc("a"))
    source = ManifestFolderSource(tmp_path, interval=0.01)
    watcher = source.watch()
    async with asyncio.timeout(10):
        first = await anext(watcher)
        assert [p.name for p in first.model.pods] == ["a"]
        write(tmp_path / "b.yaml", pod_doc("b"))
        second = await anext(watcher)
        assert [p.name for p in second.model.pods] == ["a", "b"]
    await watcher.aclose()
