"""The per-pod proxy the workload manager starts: 15001, 15006 and 15008 for one enrolled pod.

Who calls it: ztunnel's main passes `pod_proxy_factory(ctx)` to the ZDS workload manager
(`ztunnel.inpod.workload_manager`), which calls it per pod with the pod's `PodInfo` and
`PodNetns` and then runs `serve()` / `drain()` under the `PodProxy` contract of
`ztunnel.inpod.pod`. Listener binding, accept loops, connection counting and drain timing are
`ztunnel.inpod.pod_listeners.ListenerPodProxy`'s; this module supplies the three handlers
(`outbound`, `inbound_plaintext`, and an HBONE server connection per socket on 15008 calling
`inbound.InboundHbone.handle_connect`), the pod's HBONE client pool, and the policy watcher.

Lifecycle:
- `serve`: opens the pod's HBONE pool (its socket factory creates sockets inside the pod netns
  with mark 0x539, so tunnels leave with the pod IP; one pool per pod, which is ztunnel's pool
  key including the source IP), starts the listeners (`started()` once all three are bound),
  and watches the config feed to re-authorize open inbound connections.
- `drain(deadline)`: stop accepting (listeners closed; CONNECTs on already-open HBONE
  connections answered 503), close each inbound HBONE connection once it carries no tunnel
  (so an idle pooled connection from a peer does not hold the drain), let the rest finish
  until `deadline`, then cancel them (ListenerPodProxy); the pool closes when `serve` returns.
Invariants: the pool outlives every handler (handlers run inside `serve`'s pool context);
an inbound HBONE connection is served with the certificate of this pod's identity only.
"""

from __future__ import annotations

import logging

import trio

from meshcore import tlsconfig
from meshcore.hbone_trio import ConnectOutcome, ConnectRequest, open_hbone_client
from meshcore.hbone_trio.server import _serve_connection  # see docs/ztunnel-data-path.md
from meshcore.workload_identity.errors import IdentityError
from ztunnel.inpod.pod import PodInfo, PodNetns, PodProxyFactory
from ztunnel.inpod.pod_listeners import ListenerPodProxy, PodHandlers
from ztunnel.proxy.context import PodContext, ProxyContext
from ztunnel.proxy.inbound import InboundConnection, InboundHbone
from ztunnel.proxy.inbound_plaintext import handle_inbound_plaintext
from ztunnel.proxy.outbound import handle_outbound
from ztunnel.proxy.sockets import dial_in_pod
from ztunnel.proxy.tracking import ConnectionTracker

log = logging.getLogger(__name__)


class PodProxy:
    """One enrolled pod's data path (see the module docstring)."""

    def __init__(self, ctx: ProxyContext, pod: PodInfo, netns: PodNetns) -> None:
        self.context = PodContext(ctx, pod, netns)
        self.tracker = ConnectionTracker(pod.display)
        self.inbound = InboundHbone(self.context, self.tracker)
        self._hbone_connections: dict[InboundConnection, trio.CancelScope] = {}
        self.listeners = ListenerPodProxy(
            pod, netns,
            PodHandlers(
                outbound=self._outbound,
                inbound_plaintext=self._inbound_plaintext,
                inbound_hbone=self._inbound_hbone,
            ),
        )

    @property
    def open_connections(self) -> int:
        return self.listeners.open_connections

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        ctx = self.context.ctx
        identity = self.context.identity()
        ctx.identity_users.acquire(identity)
        ctx.certificates.prefetch(identity)  # ztunnel's "warmup" on pod add
        try:
            await self._serve(task_status=task_status)
        finally:
            if ctx.identity_users.release(identity):
                ctx.certificates.forget(identity)
                ctx.tls_contexts.forget(identity)

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        ctx = self.context.ctx
        async with open_hbone_client(
            ctx.settings.hbone_client, socket_factory=self._dial_hbone,
            contexts=ctx.tls_contexts,
        ) as client:
            self.context.client = client
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._serve_listeners, nursery.cancel_scope)
                    nursery.start_soon(self.tracker.watch, ctx.config, self.context.local_workload)
                    task_status.started()
            finally:
                self.context.client = None

    async def _serve_listeners(self, scope: trio.CancelScope, *,
                               task_status: trio.TaskStatus[None]) -> None:
        try:
            await self.listeners.serve(task_status=task_status)
        finally:
            scope.cancel()  # listeners done (drained or failed): stop the policy watcher too

    async def drain(self, deadline: float, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stop accepting (listeners closed, new HBONE streams 503), close inbound HBONE
        connections as soon as they carry no tunnel, wait for the rest until `deadline`."""
        self.inbound.draining = True
        async with trio.open_nursery() as nursery:

            async def run_drain(*, task_status: trio.TaskStatus[None]) -> None:
                try:
                    await self.listeners.drain(deadline, task_status=task_status)
                finally:
                    nursery.cancel_scope.cancel()

            await nursery.start(run_drain)
            task_status.started()
            nursery.start_soon(self._close_idle_hbone)

    async def _close_idle_hbone(self) -> None:
        while True:
            for connection, scope in list(self._hbone_connections.items()):
                if connection.idle:
                    scope.cancel()
            await self.tracker.wait_changed()

    # ---- handlers --------------------------------------------------------------------------
    async def _outbound(self, stream: trio.SocketStream) -> None:
        await handle_outbound(self.context, stream)

    async def _inbound_plaintext(self, stream: trio.SocketStream) -> None:
        await handle_inbound_plaintext(self.context, self.tracker, stream)

    async def _inbound_hbone(self, stream: trio.SocketStream) -> None:
        ctx = self.context.ctx
        identity = self.context.identity()
        try:
            with trio.fail_after(ctx.settings.credentials_timeout):
                creds = await ctx.certificates.wait_credentials(identity)
        except (IdentityError, trio.TooSlowError) as exc:
            log.warning("pod %s: no certificate for %s, refusing HBONE connection: %s",
                        self.context.pod.display, identity, exc or "timed out")
            return

        def credentials_for(_local: tuple[str, int]) -> tlsconfig.WorkloadCredentials:
            return creds

        connection = InboundConnection()

        async def handle_connect(request: ConnectRequest) -> ConnectOutcome:
            return await self.inbound.handle_connect(request, connection)

        with trio.CancelScope() as scope:
            self._hbone_connections[connection] = scope
            if self.inbound.draining:
                scope.cancel()
            try:
                await _serve_connection(stream, credentials_for, handle_connect,
                                        ctx.settings.hbone_server, ctx.tls_contexts)
            finally:
                del self._hbone_connections[connection]
                connection.abandon(self.tracker, "HBONE connection ended before the tunnel"
                                   " finished (cancelled: drain deadline or shutdown)")

    async def _dial_hbone(self, address: tuple[str, int]) -> trio.socket.SocketType:
        """The pool's socket factory: a marked socket made inside the pod netns, connected."""
        dialed = await dial_in_pod(self.context.netns, address,
                                   connect_timeout=self.context.settings.hbone_client.connect_timeout)
        return dialed.stream.socket


def pod_proxy_factory(ctx: ProxyContext) -> PodProxyFactory:
    """The `PodProxyFactory` for the workload manager: one `PodProxy` per pod."""

    async def factory(pod: PodInfo, netns: PodNetns) -> PodProxy:
        return PodProxy(ctx, pod, netns)

    return factory
