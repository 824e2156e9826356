"""Sample apps the sandbox runs in pod network namespaces (stdlib only, no mesh imports).

`python -m ambientctl.sandbox.apps http-echo --port P [--port P2] [--pod NS/NAME]`
`python -m ambientctl.sandbox.apps tcp-echo --port P`
`python -m ambientctl.sandbox.apps sleep` (a "client" pod: nothing listens; use `exec`)
`python -m ambientctl.sandbox.apps get URL` / `tcp HOST:PORT TEXT` (client tools for `exec`)

Which app a pod runs: annotation `sandbox.ambient-py.io/app` (`http-echo`, `tcp-echo`,
`client`); default `http-echo` on every TCP containerPort, or `client` when it has none.
"""

APP_ANNOTATION = "sandbox.ambient-py.io/app"
APPS = ("http-echo", "tcp-echo", "client")
