"""Pytest fixtures over `tests/support`: namespaces named after the test, a throwaway PKI, Envoy
processes and echo servers, each cleaned up at teardown even when the test fails.

Loaded as a plugin by `tests/conftest.py` (`pytest_plugins`). Fixtures that create namespaces
are meant for tests marked `@pytest.mark.netns` (root required; CI runs them, nothing skips).

On teardown every Envoy started here prints the end of its log; pytest shows captured teardown
output only for failing tests, so a failure comes with the Envoy log and a pass stays quiet.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import netns as ns_mod
from tests.support.creds import TestPki
from tests.support.echo import EchoServer
from tests.support.envoy import EnvoyProcess


def _test_tag(request: pytest.FixtureRequest) -> str:
    return request.node.name.removeprefix("test_")


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[str], ns_mod.Netns]]:
    """`make(suffix)` creates a namespace named after the test; all are deleted at teardown."""
    made: list[ns_mod.Netns] = []
    base = ns_mod.unique_name(_test_tag(request))

    def make(suffix: str = "") -> ns_mod.Netns:
        name = f"{base}-{suffix}" if suffix else f"{base}-{len(made)}"
        ns = ns_mod.create_netns(name)
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in reversed(made):
            ns_mod.delete_netns(ns)


@pytest.fixture
def netns_pair(netns_factory: Callable[[str], ns_mod.Netns]) -> ns_mod.NetnsPair:
    """Namespaces `a` and `b` joined by veth-a (10.250.0.1) / veth-b (10.250.0.2)."""
    return ns_mod.link_pair(netns_factory("a"), netns_factory("b"))


@pytest.fixture
def test_pki(tmp_path: pathlib.Path) -> TestPki:
    """A fresh root for trust domain cluster.local; `issue(identity)` writes PEM files."""
    return TestPki(tmp_path / "pki")


@pytest.fixture
def envoy_factory(tmp_path: pathlib.Path) -> Iterator[Callable[..., EnvoyProcess]]:
    """`start(config, name=..., netns=...)` runs an Envoy until ready; all killed at teardown."""
    started: list[EnvoyProcess] = []

    def start(config: dict[str, Any], *, name: str = "envoy", **kwargs: Any) -> EnvoyProcess:
        proc = EnvoyProcess(config, tmp_path / "envoy", name=name, **kwargs)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
            print(proc.log_tail())


@pytest.fixture
def echo_factory() -> Iterator[Callable[..., EchoServer]]:
    """`start(host, port, netns=...)` runs a threaded TCP echo server; all closed at teardown."""
    servers: list[EchoServer] = []

    def start(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> EchoServer:
        server = EchoServer(host, port, **kwargs)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
