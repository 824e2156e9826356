"""Fixtures for cni_plugin tests: a node/pod namespace pair per test (see netns_topology)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.cni_plugin.netns_topology import Topology, destroy_topology, make_topology


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("netns tests need root (run them as root, as CI does)")


@pytest.fixture
def bare_netns(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """An empty node netns and pod netns (nothing wired: a CNI chain will do it)."""
    _require_root()
    topology = make_topology(request.node.nodeid, wire=False)
    try:
        yield topology
    finally:
        destroy_topology(topology)


@pytest.fixture
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A fresh node netns and pod netns joined by a veth pair, removed after the test."""
    _require_root()
    topology = make_topology(request.node.nodeid)
    try:
        yield topology
    finally:
        destroy_topology(topology)
