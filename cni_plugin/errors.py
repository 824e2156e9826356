"""Typed errors of the cni_plugin package (plugin executable, node agent, redirection).

Who raises them: `cni_plugin.redirect.*` (kernel programming), `cni_plugin.agent_protocol` (the
plugin ⇄ agent wire format), `cni_plugin.plugin` (CNI protocol). The plugin turns any of them into a
CNI error object; the agent turns them into an error response. Each says whose fault it is through
its class and carries a message that names the object and, where known, the fix.
"""

from __future__ import annotations


class CniPluginError(Exception):
    """Base of every error raised by cni_plugin."""


class RedirectError(CniPluginError):
    """Programming the pod netns (nftables, ip rule, route) failed."""

    def __init__(self, message: str, *, netns: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.netns = netns
        self.retryable = retryable


class NetnsNotFoundError(RedirectError):
    """The pod's network namespace does not exist (any more), or is not a network namespace."""


class ProtocolError(CniPluginError):
    """A peer sent bytes that do not follow the plugin ⇄ agent protocol (the peer's fault)."""
