"""Socket plumbing of the per-pod data path: original destination, dialing inside the pod netns.

Who calls it: the three handlers (`outbound`, `inbound`, `inbound_plaintext`) and the pod
proxy's HBONE socket factory. Sockets are *created* inside the pod's network namespace through
`PodNetns.run` (the netns thread, `ztunnel.inpod.netns`), always with SO_MARK 0x539 so the in-pod
nftables rules never capture ztunnel's own traffic; connecting happens back on trio.

- `original_dst(sock)`: the pre-REDIRECT destination, `SO_ORIGINAL_DST` (SOL_IP, 80) for IPv4
  connections (also on a dual-stack socket, where they show as `::ffff:a.b.c.d`) and
  `IP6T_SO_ORIGINAL_DST` (SOL_IPV6, 80) for IPv6 ones.
- `dial_in_pod(netns, address, source_ip=...)`: a TCP connection from inside the pod. With
  `source_ip` the socket gets IP_TRANSPARENT and binds the (foreign) client IP first, so the app
  sees the real client (AMBIENT-INTERNALS §5.4.2 explains the return path: mark 0x539 → connmark
  0x111 → table 100 → local). If the kernel refuses (no CAP_NET_ADMIN, address family mismatch)
  we connect without spoofing and say so in `Dialed.spoofed`; the caller logs it.
Invariants: every socket made here is closed on any failure; nothing here blocks trio (socket
creation is a few syscalls on the netns thread; connect is trio's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import logging
import socket
import struct

import trio

from meshcore.wds import IPAddress
from ztunnel.inpod.netns import ZTUNNEL_MARK, new_socket
from ztunnel.inpod.pod import PodNetns
from ztunnel.proxy.errors import NotRedirectedError

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80  # SOL_IP
IP6T_SO_ORIGINAL_DST = 80  # SOL_IPV6 (= IPPROTO_IPV6)
Address = tuple[str, int]


def canonical_ip(text: str) -> IPAddress:
    """Parse an address as a socket reports it; IPv4-mapped IPv6 becomes IPv4."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def endpoint_of(sockaddr: tuple) -> tuple[IPAddress, int]:  # type: ignore[type-arg]
    """(canonical IP, port) of a socket address tuple (v4 or v6)."""
    return canonical_ip(str(sockaddr[0])), int(sockaddr[1])


def original_dst(sock: trio.socket.SocketType) -> tuple[IPAddress, int]:
    """The destination the app dialed before REDIRECT; NotRedirectedError if there is none."""
    local_ip, _ = endpoint_of(sock.getsockname())
    try:
        if local_ip.version == 4:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # struct sockaddr_in
            port = struct.unpack_from("!H", raw, 2)[0]
            return ipaddress.IPv4Address(raw[4:8]), port
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)  # sockaddr_in6
        port = struct.unpack_from("!H", raw, 2)[0]
        return canonical_ip(socket.inet_ntop(socket.AF_INET6, raw[8:24])), port
    except OSError as exc:
        raise NotRedirectedError(
            f"connection to {local_ip} has no original destination ({exc.strerror}); was it"
            " redirected by the in-pod rules?"
        ) from exc


@dataclasses.dataclass(frozen=True)
class Dialed:
    stream: trio.SocketStream
    spoofed: bool  # True when the connection carries the client's IP as its source


def _make_socket(family: int, source_ip: str | None) -> tuple[socket.socket, bool]:
    """Runs on the netns thread: a marked socket, transparently bound to `source_ip` if given."""
    if source_ip is not None:
        try:
            return new_socket(family, transparent=True, bind=(source_ip, 0)), True
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES, errno.EADDRNOTAVAIL, errno.EINVAL):
                raise
            log.debug("transparent bind to %s refused: %s", source_ip, exc)
    return new_socket(family, mark=ZTUNNEL_MARK), False


async def dial_in_pod(
    netns: PodNetns,
    address: Address,
    *,
    source_ip: IPAddress | None = None,
    connect_timeout: float = 10.0,
) -> Dialed:
    """Connect to `address` from inside `netns` (mark 0x539), spoofing `source_ip` if possible.

    Raises OSError (refused, unreachable; `trio.TooSlowError` becomes `TimeoutError`).
    """
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    want = family == socket.AF_INET6
    spoof = str(source_ip) if source_ip is not None and (source_ip.version == 6) == want else None
    raw, spoofed = await netns.run(_make_socket, family, spoof)
    sock = trio.socket.from_stdlib_socket(raw)
    try:
        with trio.fail_after(connect_timeout):
            await sock.connect(address)
    except trio.TooSlowError:
        sock.close()
        raise TimeoutError(errno.ETIMEDOUT, f"connect to {address[0]}:{address[1]} timed out"
                           f" after {connect_timeout:g}s") from None
    except BaseException:
        sock.close()
        raise
    return Dialed(trio.SocketStream(sock), spoofed)


async def abort(stream: trio.SocketStream) -> None:
    """Close with RST (SO_LINGER 0) so the app sees a reset, not a clean end of stream."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)
