"""Fixtures of the data-path component tests: the namespace mesh of `netns_mesh.py`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.netns import Netns
from tests.ztunnel.proxy.netns_mesh import build_topology


@pytest.fixture
def topology(netns_factory: Callable[[str], Netns]) -> dict[str, Netns]:
    """Router R with pods A, B (in-pod redirection installed) and non-mesh C; removed after."""
    return build_topology(netns_factory)
