"""Micro-benchmark: DATA throughput of the HBONE core versus h2, in memory, one core.

Not collected by pytest (bench_*.py). Run: /work/venv/bin/python -m tests.meshcore.hbone.bench_codec
[GiB]. Pushes the payload through client.send_data -> server.receive_data in 256 KiB writes, with
the receiver acknowledging every chunk (so WINDOW_UPDATEs flow back) and both sides configured
alike (4 MiB stream / 16 MiB connection windows, 1 MiB frames). Two variants for our core: the
sender's buffers fed one by one (zero copy end to end) and joined into one bytes per write (what a
socket write + read would cost). h2's data_to_send() already returns one joined bytes.
"""

from __future__ import annotations

import sys
import time

import h2
import h2.events
import h2.settings

from meshcore.hbone import DataReceived, HboneConnection, HboneSettings, Role
from tests.meshcore.hbone.helpers import h2_peer

WRITE = 256 * 1024
SETTINGS = HboneSettings()


def bench_ours(total: int, *, join: bool, read_size: int = 0) -> float:
    client = HboneConnection(Role.CLIENT, SETTINGS)
    server = HboneConnection(Role.SERVER, SETTINGS)
    client.initiate()
    server.initiate()
    server.receive_data(b"".join(client.data_to_send()))
    client.receive_data(b"".join(server.data_to_send()))
    server.receive_data(b"".join(client.data_to_send()))
    sid = client.open_connect("10.0.0.2:8080")
    server.receive_data(b"".join(client.data_to_send()))
    server.respond(sid, 200)
    client.receive_data(b"".join(server.data_to_send()))
    chunk = b"x" * WRITE
    sent = 0
    start = time.perf_counter()
    while sent < total:
        n = client.send_data(sid, chunk)
        sent += n
        bufs = client.data_to_send()
        if read_size:  # the receiver reads in fixed-size pieces unaligned to frames
            wire = b"".join(bufs)
            bufs = [wire[i : i + read_size] for i in range(0, len(wire), read_size)]
        for buf in [b"".join(bufs)] if join else bufs:
            for ev in server.receive_data(buf):
                if type(ev) is DataReceived:
                    server.acknowledge_received_data(ev.stream_id, ev.flow_controlled_length)
        if server.bytes_to_send():
            for buf in server.data_to_send():
                client.receive_data(buf)
    elapsed = time.perf_counter() - start
    return sent * 8 / elapsed / 1e9


def bench_h2(total: int) -> float:
    values = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: SETTINGS.initial_stream_window,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: SETTINGS.max_frame_size,
    }
    client = h2_peer(client_side=True)
    server = h2_peer(client_side=False)
    for conn in (client, server):
        conn.update_settings(values)
        conn.increment_flow_control_window(SETTINGS.initial_connection_window - 65535)
    for _ in range(3):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "CONNECT"), (":authority", "10.0.0.2:8080")])
    server.receive_data(client.data_to_send())
    server.send_headers(sid, [(":status", "200")])
    client.receive_data(server.data_to_send())
    chunk = b"x" * WRITE
    sent = 0
    start = time.perf_counter()
    while sent < total:
        n = min(WRITE, client.local_flow_control_window(sid))
        if n:
            client.send_data(sid, chunk[:n] if n < WRITE else chunk)
            sent += n
        for ev in server.receive_data(client.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                server.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        out = server.data_to_send()
        if out:
            client.receive_data(out)
    elapsed = time.perf_counter() - start
    return sent * 8 / elapsed / 1e9


def main() -> None:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    total = int(gib * 2**30)
    ours_views = bench_ours(total, join=False)
    ours_joined = bench_ours(total, join=True)
    ours_16k = bench_ours(total, join=False, read_size=16 * 1024)
    h2_rate = bench_h2(min(total, 2**30))
    print(f"payload {gib:g} GiB (h2: {min(gib, 1.0):g} GiB), writes of {WRITE // 1024} KiB")
    print(f"hbone core, buffers fed as queued (zero copy): {ours_views:7.1f} Gbit/s")
    print(f"hbone core, buffers joined per write:          {ours_joined:7.1f} Gbit/s")
    print(f"hbone core, receiver reads 16 KiB pieces:      {ours_16k:7.1f} Gbit/s")
    print(f"h2 {h2.__version__}:                                      {h2_rate:7.1f} Gbit/s")
    print(f"speed-up (joined vs h2): {ours_joined / h2_rate:.1f}x")


if __name__ == "__main__":
    main()
