"""The waypoint's trio adapters: HBONE tunnels in, HTTP requests through the cores, HBONE out.

`server.serve_waypoint` assembles them; `listener.WaypointProxy.handle_connect` takes each
CONNECT stream (from `serve_hbone`) and resolves a `context.TunnelContext`; the tunnel is
relayed into a `pipe`, whose other end `downstream` serves (HTTP/1.1, HTTP/2 or TCP);
`handler` runs one request (authorize, route, faults, retries, timeouts, mirrors, telemetry);
`upstream` forwards one attempt over HBONE and keeps least-request and outlier state.
"""
