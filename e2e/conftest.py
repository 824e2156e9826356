"""Fixtures of the namespace e2e suite: one real sandbox per test module.

Each module names the manifest sets it starts from (`SANDBOX_SETS`, folders of
`e2e/manifests/`); `sandbox` copies them into a fresh folder, runs `Sandbox.up` (2 nodes) and
always runs `down` at the end of the module, also when a test or `up` itself failed. Tests
change the folder only through `e2e.mesh.applied(...)`, which restores it afterwards, so a
failing test does not leak its policy into the next one. The kind suite (`e2e/kind/`) has its
own conftest and does not use these fixtures.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from ambientctl.sandbox import Sandbox
from e2e import mesh

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the sandbox needs root (network namespaces)")


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sets = getattr(request.module, "SANDBOX_SETS", ("base",))
    state_root = tmp_path_factory.mktemp("state")
    folder = tmp_path_factory.mktemp("manifests")
    sb, took = mesh.start(f"e{secrets.token_hex(3)}", state_root, folder, tuple(sets))
    print(f"\nsandbox {sb.name} up in {took:.2f}s ({len(sb.topology.pods)} pods)")
    try:
        # `up` returns once ztunnel took the pods; the control plane may push their HBONE
        # state a moment later: start from a data path that holds the folder's config.
        mesh.wait_converged(sb)
        yield sb
    finally:
        sb.down()
