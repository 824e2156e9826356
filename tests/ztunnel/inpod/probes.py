"""Test helpers for in-pod proxies: a PodProxyFactory whose handlers name port and pod, and probes
that connect from inside a pod netns (or the host) and count fds referring to a netns.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import trio

from tests.support.netns import Netns
from ztunnel.inpod.pod import PodInfo, PodNetns
from ztunnel.inpod.pod_listeners import ConnectionHandler, ListenerPodProxy, PodHandlers


def _greeting_handler(label: str, pod: PodInfo) -> ConnectionHandler:
    async def handle(stream: trio.SocketStream) -> None:
        await stream.send_all(f"{label}:{pod.name}\n".encode())
        while data := await stream.receive_some():
            await stream.send_all(data)
    return handle


@dataclass
class Proxies:
    """The test's PodProxyFactory: ListenerPodProxy with handlers that name port and pod."""

    made: dict[str, ListenerPodProxy] = field(default_factory=dict)

    async def __call__(self, pod: PodInfo, netns: PodNetns) -> ListenerPodProxy:
        handlers = PodHandlers(_greeting_handler("out", pod), _greeting_handler("in", pod),
                               _greeting_handler("hbone", pod))
        proxy = ListenerPodProxy(pod, netns, handlers)
        self.made[pod.uid] = proxy
        return proxy


def _greet(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.settimeout(3)
        return sock.recv(100)


async def greet_in(ns: Netns, port: int = 15008) -> bytes:
    """Connect to 127.0.0.1:`port` from inside `ns`; the greeting names port kind and pod."""
    return await trio.to_thread.run_sync(ns.call, _greet, port)


async def refused_in(ns: Netns | None, port: int = 15008) -> bool:
    try:
        if ns is None:
            await trio.to_thread.run_sync(_greet, port)
        else:
            await greet_in(ns, port)
    except ConnectionRefusedError:
        return True
    return False


def fds_to(netns: Netns) -> int:
    """How many fds of this process refer to `netns` (to catch leaks and duplicates)."""
    target = os.stat(netns.path)
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        count += (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)
    return count
