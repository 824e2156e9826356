"""What crosses the wire: an AF_PACKET capture of TCP between two hosts on one interface of one
sandbox namespace, with per-flow reassembly and a TLS record check.

Who calls it: the demo (`ambientctl.sandbox.demo`), to show that bytes between enrolled pods
on the underlay are TLS records only and never the plaintext it sent. The test suite has its
own, fuller capture (`tests/support/capture.py`, product code does not import tests); this is
the small subset the demo needs (IPv4, one interface).

Invariants: the socket is created inside the namespace and bound to one interface, so each
frame is seen once; `Flow.complete` is False when the SYN or any byte was missed, and a claim
of absence ("the marker is not there") is only made over complete flows with no kernel drops.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import select
import socket
import struct
import threading
from types import TracebackType

from ambientctl.sandbox.kernel import call_in_netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
TLS_TYPES = {0x14: "change_cipher_spec", 0x15: "alert", 0x16: "handshake",
             0x17: "application_data"}


@dataclasses.dataclass(frozen=True)
class Flow:
    """One direction of one TCP connection, reassembled by sequence number."""

    src: str
    sport: int
    dst: str
    dport: int
    data: bytes
    complete: bool

    def tls_records(self) -> list[tuple[str, int]] | None:
        """(type, length) of each TLS record, or None if the bytes are not a TLS stream."""
        out, pos = [], 0
        while pos + 5 <= len(self.data):
            ctype, version, length = struct.unpack_from("!BHH", self.data, pos)
            if ctype not in TLS_TYPES or version not in (0x0301, 0x0303) or length > 2**14 + 256:
                return None
            out.append((TLS_TYPES[ctype], length))
            pos += 5 + length
        return out if pos == len(self.data) else None


class Capture:
    """`with Capture(netns, "eth0", (ip_a, ip_b)) as cap: ...` then `cap.flows()`."""

    def __init__(self, netns: str, ifname: str, hosts: tuple[str, str]) -> None:
        self.netns, self.ifname, self.hosts = netns, ifname, frozenset(hosts)
        self.segments: list[tuple[tuple[str, int, str, int], int, bool, bytes]] = []
        self.drops = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Capture:
        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE
            sock.bind((self.ifname, ETH_P_ALL))
            return sock

        self._sock = call_in_netns(self.netns, open_socket)
        self._sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, daemon=True, name="demo-capture")
        self._thread.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._sock is not None and self._thread is not None
        self._stop.set()
        self._thread.join()
        stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        self.drops = struct.unpack("II", stats)[1]
        self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        buf = bytearray(256 * 1024)
        while True:
            stopping = self._stop.is_set()
            select.select([self._sock], [], [], 0.05)
            while True:
                try:
                    size = self._sock.recv_into(buf)
                except BlockingIOError:
                    break
                self._record(bytes(buf[:size]))
            if stopping:
                return

    def _record(self, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_TCP:
            return
        src = str(ipaddress.IPv4Address(frame[26:30]))
        dst = str(ipaddress.IPv4Address(frame[30:34]))
        if {src, dst} != self.hosts:
            return
        tcp = 14 + (frame[14] & 0x0F) * 4
        end = 14 + int.from_bytes(frame[16:18], "big")
        sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
        offset = (frame[tcp + 12] >> 4) * 4
        syn = bool(frame[tcp + 13] & 0x02)
        self.segments.append(((src, sport, dst, dport), seq, syn, frame[tcp + offset:end]))

    def flows(self) -> list[Flow]:
        by_key: dict[tuple[str, int, str, int], list[tuple[int, bool, bytes]]] = {}
        for key, seq, syn, payload in self.segments:
            by_key.setdefault(key, []).append((seq, syn, payload))
        out = []
        for key, segs in by_key.items():
            syns = [s for s in segs if s[1]]
            base = (syns[0][0] + 1) % 2**32 if syns else segs[0][0]
            data, holes = bytearray(), 0
            for rel, payload in sorted(((s - base) % 2**32, p) for s, _, p in segs if p):
                if rel > len(data):
                    holes += 1
                    data += b"\0" * (rel - len(data))
                if rel + len(payload) > len(data):
                    data += payload[len(data) - rel:]
            out.append(Flow(*key, bytes(data), complete=bool(syns) and holes == 0))
        return out
