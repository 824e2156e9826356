"""Packet capture without tcpdump: an AF_PACKET sniffer on one interface inside one namespace.

Who calls it: tests that must show what crosses the wire ("the plaintext marker never appears;
only TLS records do"). It hands back TCP payload per directed flow, reassembled by sequence
number, and `tls_records()` to parse a flow as a TLS record stream.

Invariants:
- The socket is created inside the namespace (`in_netns`) and bound to one interface, so each
  frame is seen exactly once (as outgoing or incoming); the reader thread needs no namespace.
- A capture that lost frames says so: kernel drops (PACKET_STATISTICS), truncated frames and
  holes in a flow's sequence space are all counted, and `Flow.complete` is False then. Tests
  that assert absence ("the marker is NOT there") must check completeness first, or the
  assertion could pass on a capture that simply missed the bytes.
- Veth frames may be GSO super-frames of up to 64 KiB; the receive buffer is sized for them.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import select
import socket
import struct
import threading

from tests.support.netns import Netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
FRAME_BUFFER = 256 * 1024
TLS_CONTENT_TYPES = {0x14: "change_cipher_spec", 0x15: "alert", 0x16: "handshake",
                     0x17: "application_data"}
TLS_RECORD_MAX = 2**14 + 256  # TLSCiphertext.length limit (RFC 8446 §5.2)


class CaptureError(Exception):
    """The capture could not start, or a flow is not what the caller asserted (why inside)."""


@dataclasses.dataclass(frozen=True)
class FlowKey:
    src: str
    sport: int
    dst: str
    dport: int

    def __str__(self) -> str:
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"


@dataclasses.dataclass(frozen=True)
class Segment:
    key: FlowKey
    seq: int
    syn: bool
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Flow:
    """One direction of one TCP connection, reassembled from the first byte seen."""

    key: FlowKey
    data: bytes
    holes: int
    saw_syn: bool

    @property
    def complete(self) -> bool:
        """True when the capture saw the SYN and every byte after it, with no hole."""
        return self.saw_syn and self.holes == 0


@dataclasses.dataclass(frozen=True)
class TlsRecord:
    content_type: int
    version: int
    length: int


def parse_frame(frame: bytes) -> Segment | None:
    """TCP segment of an Ethernet frame carrying IPv4 or IPv6 (no extension headers), or None."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != socket.IPPROTO_TCP:
            return None
        total = int.from_bytes(frame[16:18], "big")
        src = str(ipaddress.IPv4Address(frame[26:30]))
        dst = str(ipaddress.IPv4Address(frame[30:34]))
        tcp = 14 + ihl
        end = 14 + total if total else len(frame)
    elif ethertype == 0x86DD:
        if frame[20] != socket.IPPROTO_TCP:
            return None
        src = str(ipaddress.IPv6Address(frame[22:38]))
        dst = str(ipaddress.IPv6Address(frame[38:54]))
        tcp = 54
        end = tcp + int.from_bytes(frame[18:20], "big")
    else:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
    offset = (frame[tcp + 12] >> 4) * 4
    syn = bool(frame[tcp + 13] & 0x02)
    return Segment(FlowKey(src, sport, dst, dport), seq, syn, bytes(frame[tcp + offset : end]))


def reassemble(key: FlowKey, segments: list[Segment]) -> Flow:
    """Order one flow's segments by sequence number; drop retransmitted bytes; count holes."""
    syns = [s for s in segments if s.syn]
    if syns:
        base = (syns[0].seq + 1) % 2**32
    elif segments:
        base = segments[0].seq
    else:
        return Flow(key, b"", 0, False)
    pieces = sorted(((s.seq - base) % 2**32, s.payload) for s in segments if s.payload)
    data = bytearray()
    holes = 0
    for rel, payload in pieces:
        if rel > len(data):
            holes += 1
            data += b"\0" * (rel - len(data))  # keep offsets; the flow is marked incomplete
        if rel + len(payload) > len(data):
            data += payload[len(data) - rel :]
    return Flow(key, bytes(data), holes, bool(syns))


def tls_records(data: bytes) -> tuple[list[TlsRecord], int]:
    """Parse `data` as TLS records; return them and the count of trailing bytes of a cut record.

    Raises CaptureError at the first byte that cannot start a TLS record.
    """
    records: list[TlsRecord] = []
    pos = 0
    while pos + 5 <= len(data):
        ctype, version, length = struct.unpack_from("!BHH", data, pos)
        if ctype not in TLS_CONTENT_TYPES or version not in (0x0301, 0x0303) or \
                length > TLS_RECORD_MAX:
            raise CaptureError(
                f"byte {pos} is not a TLS record header: type {ctype:#x}, version "
                f"{version:#06x}, length {length} (plaintext on the wire?)"
            )
        records.append(TlsRecord(ctype, version, length))
        pos += 5 + length
    return records, max(0, len(data) - pos)


class PacketCapture:
    """Sniff TCP on `ifname` inside `netns` (None: the current one), optionally between `hosts`.

    Use as a context manager around the traffic; afterwards read `flows()`.
    """

    def __init__(self, ifname: str, *, netns: Netns | None = None,
                 hosts: tuple[str, str] | None = None) -> None:
        self.ifname = ifname
        self.netns = netns
        self.hosts = frozenset(hosts) if hosts else None
        self.segments: list[Segment] = []
        self.kernel_drops = 0
        self.truncated = 0
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 * 1024 * 1024)
            sock.bind((self.ifname, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            where = f"netns {self.netns.name!r}" if self.netns else "this netns"
            raise CaptureError(f"cannot sniff {self.ifname!r} in {where}: {exc}") from exc
        sock.setblocking(False)
        return sock

    def start(self) -> PacketCapture:
        if self.netns:
            with self.netns.enter():
                self._sock = self._open()
        else:
            self._sock = self._open()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.ifname}",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        buf = bytearray(FRAME_BUFFER)
        try:
            stopping = False
            while True:
                if not stopping:
                    ready, _, _ = select.select([self._sock, self._wake_r], [], [])
                    stopping = self._wake_r in ready
                while True:  # drain everything queued now
                    try:
                        size = self._sock.recv_into(buf, 0, socket.MSG_TRUNC)
                    except BlockingIOError:
                        break
                    if size > len(buf):
                        self.truncated += 1
                        continue
                    self._record(bytes(buf[:size]))
                if stopping:
                    return
        except BaseException as exc:
            self._error = exc

    def _record(self, frame: bytes) -> None:
        segment = parse_frame(frame)
        if segment is None:
            return
        if self.hosts and {segment.key.src, segment.key.dst} != self.hosts:
            return
        self.segments.append(segment)

    def stop(self) -> None:
        """Stop after draining every frame the kernel already queued; raise if the reader died."""
        if self._thread is None or self._sock is None:
            return
        os.write(self._wake_w, b"x")
        self._thread.join()
        try:
            stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.kernel_drops += struct.unpack("II", stats)[1]
        except OSError as exc:
            if exc.errno != errno.ENOPROTOOPT:
                raise
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._thread = None
        if self._error is not None:
            raise CaptureError(f"capture reader on {self.ifname!r} failed") from self._error

    def __enter__(self) -> PacketCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def lossless(self) -> bool:
        """No frame dropped by the kernel or cut short by our buffer."""
        return self.kernel_drops == 0 and self.truncated == 0

    def flows(self) -> dict[FlowKey, Flow]:
        by_key: dict[FlowKey, list[Segment]] = {}
        for segment in self.segments:
            by_key.setdefault(segment.key, []).append(segment)
        return {key: reassemble(key, segs) for key, segs in by_key.items()}

    def payload_bytes(self) -> int:
        return sum(len(s.payload) for s in self.segments)

    def contains(self, marker: bytes) -> bool:
        """Does `marker` occur in any reassembled flow (across segment boundaries too)?"""
        return any(marker in flow.data for flow in self.flows().values())
