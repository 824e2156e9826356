"""ztunnel marks its own pod `ambient-py.io/zds-synced` through the API (kmock) once synced."""

from __future__ import annotations

import pytest
import trio

from tests.cni_plugin.test_agent_kubernetes import Cluster, cluster, pod  # noqa: F401 (fixture)
from ztunnel.sync_report import ZDS_SYNCED_ANNOTATION, report_when_synced

pytestmark = pytest.mark.trio


async def test_annotation_patched_after_first_snapshot(cluster: Cluster) -> None:  # noqa: F811
    """After wait_synced returns, the pod carries the annotation with the served pod count."""
    await cluster.create(pod("istio-system", "ztunnel-abc"))
    synced = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            report_when_synced, cluster.bridge, lambda: cluster.client, "istio-system",
            "ztunnel-abc", synced.wait, lambda: 3,
        )
        stored = await cluster.stored("istio-system", "ztunnel-abc")
        assert ZDS_SYNCED_ANNOTATION not in stored["metadata"].get("annotations", {})
        synced.set()
    stored = await cluster.stored("istio-system", "ztunnel-abc")
    assert stored["metadata"]["annotations"][ZDS_SYNCED_ANNOTATION] == "3"
