"""Tell the operator that this ztunnel has re-received its node's pods (the rollout gate).

The operator rolls ztunnel node by node and starts the next node only when the new ztunnel pod
is Ready *and* carries `ambient-py.io/zds-synced` (docs/operator.md, "Contract for the ztunnel
side"). After the workload manager has processed the node agent's first snapshot, ztunnel
merge-patches its own pod with that annotation (value: the number of pods it serves).

Runs only on Kubernetes (`POD_NAME`/`POD_NAMESPACE` known and API credentials available). The
API call is asyncio (`meshcore.kube`), so it goes through the bridge like the xDS and CA clients.
Failures are retried with back-off; they never affect the data path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from meshcore.grpc_bridge import AsyncioBridge
from meshcore.kube import KubeClient

log = logging.getLogger("ztunnel.sync_report")
ZDS_SYNCED_ANNOTATION = "ambient-py.io/zds-synced"


async def patch_zds_synced(
    bridge: AsyncioBridge, client_factory: Callable[[], KubeClient], namespace: str, name: str,
    pods: int,
) -> None:
    """One merge patch of the annotation onto pod namespace/name."""
    async def patch() -> None:
        client = client_factory()
        try:
            await client.merge_patch(
                client.path("Pod", namespace, name),
                {"metadata": {"annotations": {ZDS_SYNCED_ANNOTATION: str(pods)}}},
            )
        finally:
            await client.close()

    await bridge.call(patch)


async def report_when_synced(
    bridge: AsyncioBridge, client_factory: Callable[[], KubeClient], namespace: str, name: str,
    wait_synced: Callable[[], object], pod_count: Callable[[], int],
    *, initial_backoff: float = 1.0, max_backoff: float = 30.0,
) -> None:
    """Wait for the first ZDS snapshot, then patch until it succeeds (back-off between tries)."""
    await wait_synced()  # type: ignore[misc]
    delay = initial_backoff
    while True:
        try:
            await patch_zds_synced(bridge, client_factory, namespace, name, pod_count())
        except Exception as exc:  # API down, RBAC: keep serving traffic, retry later
            log.warning("cannot mark pod %s/%s as ZDS-synced (retrying in %.0fs): %s",
                        namespace, name, delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            continue
        log.info("marked pod %s/%s %s=%d for the operator's rollout", namespace, name,
                 ZDS_SYNCED_ANNOTATION, pod_count())
        return
