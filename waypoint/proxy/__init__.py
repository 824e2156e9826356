"""The waypoint's trio adapters: HBONE tunnels in, HTTP requests through the cores, HBONE out.

`server.serve_waypoint` assembles them; `meshcore.hbone_trio.serve_hbone` accepts HBONE and
`listener.WaypointProxy.admit` resolves each CONNECT's `context.TunnelContext`; `downstream`
serves the tunnel stream itself (HTTP/1.1, HTTP/2 or TCP); `handler` runs one request
(authorize, route, faults, retries, timeouts, mirrors, telemetry); `upstream` chooses the
endpoint and keeps least-request and outlier state; `pool` keeps the upstream HTTP
connections (keep-alive HTTP/1.1, multiplexed HTTP/2) and runs each exchange on one.
"""
