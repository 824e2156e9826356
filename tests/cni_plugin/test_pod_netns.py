"""Finding a running pod's netns: cgroup parsing, a fake /proc tree, the sandbox annotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni_plugin.agent.pod_netns import (
    NETNS_ANNOTATION,
    AnnotationFinder,
    ProcFinder,
    is_netns,
    netns_from_annotation,
    pod_uid_from_cgroup,
    scan_proc,
)
from meshcore.model import Pod, parse_object

UID = "6f1c2a3b-1111-4222-8333-944455556666"
UID2 = "0a0b0c0d-aaaa-4bbb-8ccc-dddddddddddd"


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(f"0::/kubepods/besteffort/pod{UID}/abcdef0123\n", UID, id="cgroupfs-v2"),
    pytest.param("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                 f"{UID.replace('-', '_')}.slice/cri-containerd-abc.scope\n", UID,
                 id="systemd-v2"),
    pytest.param(f"12:memory:/kubepods/pod{UID}/ctr\n11:cpu:/kubepods/pod{UID}/ctr\n", UID,
                 id="cgroup-v1-many-lines"),
    pytest.param("0::/system.slice/containerd.service\n", None, id="not-a-pod"),
    pytest.param("0::/user.slice/podman-123.scope\n", None, id="pod-word-without-uid"),
    pytest.param("", None, id="empty"),
])
def test_pod_uid_from_cgroup(text: str, expected: str | None) -> None:
    """The pod UID is recognised in cgroupfs and systemd cgroup paths, v1 and v2."""
    assert pod_uid_from_cgroup(text) == expected


def _proc(root: Path, pid: int, cgroup: str, netns_content: str) -> None:
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "ns" / "net").write_text(netns_content)  # a distinct inode per "namespace"


def test_scan_proc_fake_tree(tmp_path: Path) -> None:
    """Processes map to pod UIDs; lowest pid wins; host-netns processes are skipped."""
    host = tmp_path / "self" / "ns"
    host.mkdir(parents=True)
    (host / "net").write_text("host")
    _proc(tmp_path, 40, f"0::/kubepods/pod{UID}/pause\n", "pod1")
    _proc(tmp_path, 52, f"0::/kubepods/pod{UID}/app\n", "pod1-app")
    _proc(tmp_path, 60, f"0::/kubepods/pod{UID2}/app\n", "pod2")
    _proc(tmp_path, 7, "0::/system.slice/kubelet.service\n", "other")
    (tmp_path / "cpuinfo").write_text("not a pid")
    # A host-network pod: its process's netns is the host's (same inode as self/ns/net).
    d = tmp_path / "80"
    (d / "ns").mkdir(parents=True)
    (d / "cgroup").write_text(f"0::/kubepods/pod{UID2.replace('a', 'e')}/x\n")
    os.link(host / "net", d / "ns" / "net")
    found = scan_proc(str(tmp_path), host_netns=str(host / "net"))
    assert found == {UID: str(tmp_path / "40" / "ns" / "net"),
                     UID2: str(tmp_path / "60" / "ns" / "net")}
    assert scan_proc(str(tmp_path), {UID2}, host_netns=str(host / "net")) == {
        UID2: str(tmp_path / "60" / "ns" / "net")}


def test_proc_finder_matches_model_pods(tmp_path: Path) -> None:
    """ProcFinder maps found UIDs back to (namespace, name) of the given pods."""
    (tmp_path / "self" / "ns").mkdir(parents=True)
    (tmp_path / "self" / "ns" / "net").write_text("host")
    _proc(tmp_path, 40, f"0::/kubepods/pod{UID}/pause\n", "pod1")
    pods = [_pod("web", uid=UID), _pod("api", uid=UID2)]
    assert ProcFinder(str(tmp_path)).find(pods) == {("shop", "web"): str(tmp_path / "40/ns/net")}


def _pod(name: str, *, uid: str = "", annotations: dict[str, str] | None = None) -> Pod:
    pod = parse_object({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": "shop", "uid": uid,
                                     "annotations": annotations or {}},
                        "spec": {"containers": [{"name": "app"}]}})
    assert isinstance(pod, Pod)
    return pod


def test_annotation_rule(tmp_path: Path) -> None:
    """The sandbox rule: an absolute path that is a network namespace right now."""
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    assert is_netns("/proc/self/ns/net")
    assert not is_netns(str(plain)) and not is_netns(str(tmp_path / "missing"))
    assert netns_from_annotation(_pod("a", annotations={NETNS_ANNOTATION: "/proc/self/ns/net"})) \
        == "/proc/self/ns/net"
    for bad in ("relative/netns", str(plain), ""):
        assert netns_from_annotation(_pod("a", annotations={NETNS_ANNOTATION: bad})) is None
    finder = AnnotationFinder()
    assert finder.find([_pod("a", annotations={NETNS_ANNOTATION: "/proc/self/ns/net"}),
                        _pod("b")]) == {("shop", "a"): "/proc/self/ns/net"}
