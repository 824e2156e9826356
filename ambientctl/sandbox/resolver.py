"""`--node NODE` for the debugging commands (`ambientctl ztunnel-config --node node1 ...`).

Who calls it: `ambientctl.__main__` passes a `SandboxResolver` to `ambientctl.debug.register`;
`ambientctl.debug.admin_client` asks it for a node's ztunnel admin address and then makes one
HTTP request from the same thread. `ambientctl why SRC DST:PORT` with no source asks it first
for the node of pod SRC (`node_of`), then for that node's address.

ztunnel's admin endpoint listens on 127.0.0.1:15000 *inside* the node's network namespace, which
nothing in the root namespace can reach (the sandbox adds no interface there). So resolving a
node moves the calling thread into that node's netns for good and answers 127.0.0.1:15000. This
is the one deliberate exception to "switch, make a socket, switch back" (CONVENTIONS #10), as
for `exec`: the CLI process exists to make that one request, then exits.
Invariants: unknown sandbox or node → DebugError naming the known nodes; nothing is switched
then.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ambientctl.debug.errors import DebugError
from ambientctl.sandbox import kernel
from ambientctl.sandbox.errors import SandboxError

if TYPE_CHECKING:
    from ambientctl.sandbox.core import Sandbox

ADMIN = ("127.0.0.1", 15000)


class SandboxResolver:
    """Maps a sandbox node name to its ztunnel admin address (see the module docstring)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name  # None: $AMBIENT_SANDBOX, else the default sandbox

    def _sandbox(self, what: str) -> Sandbox:
        from ambientctl.sandbox.core import DEFAULT_NAME, Sandbox

        name = self.name or os.environ.get("AMBIENT_SANDBOX", DEFAULT_NAME)
        sb = Sandbox(name)
        if not sb.is_up():
            raise DebugError(f"{what}: sandbox {name!r} is not up (start it with "
                             "`ambientctl sandbox up`, or pass --admin HOST:PORT)")
        return sb

    def node_of(self, pod: str) -> str:
        what = f"the node of pod {pod} (why with no -f/--ztunnel-admin/--node)"
        try:
            return self._sandbox(what).node_of(pod)
        except SandboxError as exc:
            raise DebugError(f"{what}: {exc}; or name a node: --node NODE") from exc

    def admin_address(self, node: str) -> tuple[str, int]:
        try:
            netns = self._sandbox(f"--node {node}").node_netns(node)
        except SandboxError as exc:
            raise DebugError(f"--node {node}: {exc}") from exc
        if os.geteuid() != 0:
            raise DebugError(f"--node {node}: reaching a sandbox node needs root (its ztunnel "
                             f"admin listens inside network namespace {netns})")
        try:
            kernel.enter_netns_for_exec(netns)
        except SandboxError as exc:
            raise DebugError(f"--node {node}: {exc}") from exc
        return ADMIN
