"""`ambientctl sandbox`: the whole mesh on one machine, each node and pod a network namespace.

Python API (used by the CLI, the demo and the e2e suite):

    from ambientctl.sandbox import Sandbox
    sb = Sandbox("sb")
    sb.up(nodes=2, manifests=Path("examples/sandbox"), progress=print)
    sb.exec("shop/client", ["curl", "-s", f"http://{sb.pod_ip('shop/echo')}:8080/"])
    sb.down()

See `core.Sandbox` and docs/sandbox.md. Attributes are loaded lazily so the sample apps
(`ambientctl.sandbox.apps`) start without importing pyroute2.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ComponentFailedError", "Sandbox", "SandboxError"]


def __getattr__(name: str) -> Any:
    if name == "Sandbox":
        from ambientctl.sandbox.core import Sandbox

        return Sandbox
    if name in ("SandboxError", "ComponentFailedError"):
        from ambientctl.sandbox import errors

        return getattr(errors, name)
    raise AttributeError(name)
