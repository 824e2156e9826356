"""The Delta xDS client over grpclib (asyncio): one stream, reconnects with back-off, resumes.

Who calls it: ztunnel (`ztunnel/config_client.py`) and the waypoint run `XdsClient.run()` on
the asyncio bridge thread (`meshcore.grpc_bridge`). What it hands to: for every response, the
sync `handler(delta)` they pass in (ztunnel's applies it to `meshcore.wds.Store` and sends
the new immutable snapshot to trio). The protocol decisions live in
`meshcore.xds.protocol.DeltaClientProtocol`; this module only moves messages and waits.

Behaviour:
* Connects through `open_channel()` (an async context manager yielding a grpclib Channel:
  `tcp_channel(host, port, ssl=...)` for TLS or plaintext, with HTTP/2 keepalive;
  `grpclib.testing.ChannelFor` in tests), sending `authorization: Bearer <token>` (token
  re-read on every connect) and any extra metadata (e.g. `clusterid`).
* If `handler` raises one of `nack_on` (default `ResourceRejected`, which
  `meshcore.wds.ConversionError` is), the response is NACKed with the error's message and the
  proxy keeps its last good state; other exceptions are bugs and propagate out of `run()`.
* `on_connection(bool)` (optional, sync, on the loop thread) is told when a stream opens and
  when it ends, for readiness and admin reporting.
* When the stream or connection fails, it waits (10 ms doubling to 15 s; reset after a
  response arrives) and reconnects, resuming with `initial_resource_versions`.
  The proxy state is untouched meanwhile: the data path keeps serving the last good state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import NoReturn

import grpclib.client
import grpclib.const
import grpclib.exceptions
from grpclib.config import Configuration

from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
)
from meshcore.xds.errors import ResourceRejected
from meshcore.xds.protocol import DeltaClientProtocol, ReceivedDelta
from meshcore.xds.types import DELTA_METHOD

log = logging.getLogger("meshcore.xds.client")

# How a stream can end that is worth a reconnect (server down, reset, bad status, h2 error).
_STREAM_FAILURES = (
    OSError,
    TimeoutError,
    grpclib.exceptions.GRPCError,
    grpclib.exceptions.StreamTerminatedError,
    grpclib.exceptions.ProtocolError,
)
DeltaHandler = Callable[[ReceivedDelta], None]
ChannelOpener = Callable[[], contextlib.AbstractAsyncContextManager[grpclib.client.Channel]]


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: `initial`, multiplied by `multiplier` per failure, capped at `maximum`."""

    initial: float = 0.010
    maximum: float = 15.0
    multiplier: float = 2.0

    def next(self, current: float) -> float:
        return min(self.maximum, current * self.multiplier)


@dataclasses.dataclass(frozen=True, slots=True)
class XdsClientStatistics:
    connected: bool
    connects: int  # streams opened
    disconnects: int  # streams that ended or failed
    responses: int
    acks: int
    nacks: int
    last_error: str  # why the last stream ended, "" if none yet
    last_nack: str  # message of the last NACK we sent, "" if none


def tcp_channel(
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_name: str | None = None,
    keepalive: float | None = 30.0,
    keepalive_timeout: float = 10.0,
) -> ChannelOpener:
    """A ChannelOpener for `host:port`: TLS when `ssl` is given (verifying `server_name`, e.g.
    `istiod.istio-system.svc`, instead of `host` when set), else plaintext h2c.

    With `keepalive` set, an HTTP/2 PING is sent every `keepalive` seconds while the stream is
    open and the connection is dropped (then re-dialled) when one is not answered within
    `keepalive_timeout`: an idle xDS stream to a vanished istiod would otherwise wait forever.
    """
    options: dict[str, object] = {}
    if server_name:
        options["ssl_target_name_override"] = server_name
    if keepalive is not None:
        options.update(
            _keepalive_time=keepalive,
            _keepalive_timeout=keepalive_timeout,
            _http2_max_pings_without_data=0,  # idle streams are normal for xDS: keep pinging
            _http2_min_sent_ping_interval_without_data=keepalive,
        )
    config = Configuration(**options) if options else None  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def open_channel() -> AsyncIterator[grpclib.client.Channel]:
        channel = grpclib.client.Channel(host, port, ssl=ssl, config=config)
        try:
            yield channel
        finally:
            channel.close()

    return open_channel


class XdsClient:
    """Delta ADS client for a fixed set of wildcard subscriptions."""

    def __init__(
        self,
        open_channel: ChannelOpener,
        *,
        node: Node,
        type_urls: Sequence[str],
        handler: DeltaHandler,
        token_provider: Callable[[], str] | None = None,
        metadata: Mapping[str, str] | None = None,
        backoff: Backoff = Backoff(),
        nack_on: tuple[type[BaseException], ...] = (ResourceRejected,),
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        self.protocol = DeltaClientProtocol(node, type_urls)
        self._open_channel = open_channel
        self._handler = handler
        self._token_provider = token_provider
        self._metadata = dict(metadata or {})
        self._backoff = backoff
        self._nack_on = nack_on
        self._on_connection = on_connection
        self._connected = False
        self._connects = self._disconnects = 0
        self._responses = self._acks = self._nacks = 0
        self._last_error = self._last_nack = ""

    def statistics(self) -> XdsClientStatistics:
        return XdsClientStatistics(
            connected=self._connected,
            connects=self._connects,
            disconnects=self._disconnects,
            responses=self._responses,
            acks=self._acks,
            nacks=self._nacks,
            last_error=self._last_error,
            last_nack=self._last_nack,
        )

    async def run(self) -> NoReturn:
        """Keep a stream open forever: connect, apply, ACK/NACK; on failure back off, resume."""
        delay = self._backoff.initial
        while True:
            got_response = False
            # The stream runs in its own task: grpclib cancels the task that owns a stream when
            # the connection drops and turns that into StreamTerminatedError, which must never
            # be confused with (or swallow) the cancellation of run() itself.
            stream_task = asyncio.create_task(self._run_stream())
            try:
                await asyncio.wait({stream_task})
                got_response = stream_task.result()
                self._last_error = "server closed the stream"
            except _STREAM_FAILURES as e:
                self._last_error = f"{type(e).__name__}: {e}"
            finally:
                if not stream_task.done():
                    stream_task.cancel()
                    await asyncio.gather(stream_task, return_exceptions=True)
                if self._connected:
                    self._disconnects += 1
                    self._connected = False
                    if self._on_connection is not None:
                        self._on_connection(False)
            if got_response:
                delay = self._backoff.initial
            log.warning("xDS stream ended (%s); reconnecting in %.3fs", self._last_error, delay)
            await asyncio.sleep(delay)
            delay = self._backoff.next(delay)

    async def _run_stream(self) -> bool:
        """One stream's life; return whether any response arrived (resets the back-off)."""
        got_response = False
        async with self._open_channel() as channel, channel.request(
            DELTA_METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            DeltaDiscoveryRequest,
            DeltaDiscoveryResponse,
            metadata=self._call_metadata(),
        ) as stream:
            await stream.send_request()
            for request in self.protocol.start_stream():
                await stream.send_message(request)
            self._connected = True
            self._connects += 1
            if self._on_connection is not None:
                self._on_connection(True)
            log.info("xDS stream open; subscribed to %s", ", ".join(self.protocol.type_urls))
            while True:
                response = await stream.recv_message()
                if response is None:
                    await stream.recv_trailing_metadata()  # raises GRPCError on error status
                    return got_response
                got_response = True
                self._responses += 1
                await stream.send_message(self._process(response))

    def _process(self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest:
        try:
            delta = self.protocol.receive(response)
            self._handler(delta)
        except self._nack_on as e:
            self._nacks += 1
            self._last_nack = str(e)
            log.warning(
                "NACK %s nonce %s: %s (keeping the last good state)",
                response.type_url, response.nonce, e,
            )
            return self.protocol.nack(response.type_url, response.nonce, str(e))
        self._acks += 1
        return self.protocol.ack(delta)

    def _call_metadata(self) -> dict[str, str]:
        metadata = dict(self._metadata)
        if self._token_provider is not None:
            metadata["authorization"] = f"Bearer {self._token_provider()}"
        return metadata
