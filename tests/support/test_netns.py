"""Namespaces, veth pairs and per-thread namespace switching (tests/support/netns.py)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable

import pytest

from tests.support import netns as ns_mod


def test_unique_names_are_short_and_distinct() -> None:
    """Names derive from the tag, fit in 24 characters and differ between calls."""
    first = ns_mod.unique_name("test_some_really_long_test_name[with-params]")
    second = ns_mod.unique_name("test_some_really_long_test_name[with-params]")
    assert first != second
    assert len(first) <= 24
    assert first.startswith("t-test-some-really")


def test_interface_name_limit() -> None:
    """A veth name over 15 bytes is refused before any kernel call."""
    with pytest.raises(ns_mod.NetnsError, match="longer than 15"):
        ns_mod.add_veth(ns_mod.Netns("x"), ns_mod.Netns("y"), "a" * 16, "b")


def test_missing_namespace_is_named() -> None:
    """Entering a namespace that does not exist names it in the error."""
    with pytest.raises(ns_mod.NetnsError, match="no-such-ns"), ns_mod.in_netns("no-such-ns"):
        pass


@pytest.mark.netns
def test_pair_carries_tcp(netns_pair: ns_mod.NetnsPair) -> None:
    """A listener in b is reachable from a over the veth pair, and not from the root netns."""
    pair = netns_pair
    listener = pair.b.call(socket.create_server, (pair.ip_b, 0))
    port = listener.getsockname()[1]
    with pair.a.enter():
        client = socket.create_connection((pair.ip_b, port), timeout=5)
    conn, peer = listener.accept()
    assert peer[0] == pair.ip_a
    client.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    for sock in (client, conn, listener):
        sock.close()
    with pytest.raises(OSError), socket.create_connection((pair.ip_b, port), timeout=0.5):
        pass


@pytest.mark.netns
def test_in_netns_restores_thread_on_error(netns_factory: Callable[[str], ns_mod.Netns]) -> None:
    """The thread returns to its own namespace even when the body raises."""
    ns = netns_factory("x")
    before = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(RuntimeError), ns.enter():
        assert os.readlink("/proc/thread-self/ns/net") != before
        raise RuntimeError("boom")
    assert os.readlink("/proc/thread-self/ns/net") == before


@pytest.mark.netns
def test_popen_runs_inside_and_delete_reaps(netns_factory: Callable[[str], ns_mod.Netns]) -> None:
    """A child started with popen lives in the namespace; deleting the namespace kills it."""
    ns = netns_factory("p")
    child = ns.popen(["sleep", "60"], stdout=subprocess.DEVNULL)
    try:
        assert os.stat(f"/proc/{child.pid}/ns/net").st_ino == os.stat(ns.path).st_ino
        assert child.pid in ns.pids()
        ns_mod.delete_netns(ns)
        assert child.wait(timeout=5) == -9
        assert not os.path.exists(ns.path)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.netns
def test_addresses_and_routes(netns_pair: ns_mod.NetnsPair) -> None:
    """A second address and a route via the peer land in the namespace's tables."""
    pair = netns_pair
    pair.b.add_address(pair.if_b, "10.251.0.2", 32)
    pair.a.add_route("10.251.0.2/32", gateway=pair.ip_b)
    assert "10.251.0.2 via 10.250.0.2" in pair.a.run(["ip", "route", "show"]).stdout
    listener = pair.b.call(socket.create_server, ("10.251.0.2", 0))
    with pair.a.enter():
        client = socket.create_connection(listener.getsockname(), timeout=5)
    conn, _ = listener.accept()
    for sock in (client, conn, listener):
        sock.close()
