"""Typed errors of `ambientctl sandbox`; one base (`SandboxError`), messages name the fix.

Who raises them: every module of `ambientctl.sandbox`. Who catches them: `ambientctl.__main__`
prints `str(exc)` and exits 1; the Python API lets them propagate to the caller (demo, e2e).
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base error of the sandbox."""


class SandboxConfigError(SandboxError):
    """The user's input (flags, manifests) cannot be used; the message says what to change."""


class NotRootError(SandboxError):
    """The sandbox needs root (network namespaces under /run/netns, nftables in pods)."""


class SandboxStateError(SandboxError):
    """The sandbox is not in the state the command needs (already up, not up)."""


class ComponentFailedError(SandboxError):
    """A component did not come up (exited, or not ready by the deadline)."""

    def __init__(self, component: str, reason: str, log_tail: str = "") -> None:
        self.component = component
        self.reason = reason
        self.log_tail = log_tail
        msg = (f"{component} did not come up: {reason}\n"
               f"  see: ambientctl sandbox logs {component}")
        if log_tail:
            msg += "\n  last log lines:\n" + "\n".join(
                f"    {line}" for line in log_tail.splitlines())
        super().__init__(msg)


class PodSetupError(SandboxError):
    """A pod could not be created (netns, CNI ADD, app); names the pod and the failing step."""
