"""Process and socket facts from /proc: CPU time, peak RSS, and "is this pid listening on a port".

Who calls it: the benchmark cases, to measure proxies they started and to wait for servers
(iperf3, the ping-pong server, proxies) to listen before traffic starts. Reading
/proc/<pid>/net/tcp{,6} shows the sockets of the pid's own network namespace, so a listener
inside a namespace is observed without connecting to it (a probe connection would disturb
iperf3's control protocol).
"""

from __future__ import annotations

import os
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TCP_LISTEN = "0A"


class ProcError(Exception):
    """A process we measure or wait for is gone or never became ready (names the pid)."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's peak resident set size."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise ProcError(f"pid {pid} has no VmHWM line")


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of `pid`."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == TCP_LISTEN:
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def wait_listening(pid: int, ports: set[int], *, timeout: float = 15.0, what: str = "") -> None:
    """Poll until every port in `ports` listens in pid's namespace; raise if pid exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcError(f"{what or 'pid'} {pid} exited before listening on {sorted(ports)}")
        try:
            missing = ports - listening_ports(pid)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcError(f"{what or 'pid'} {pid} exited before listening") from exc
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ProcError(f"{what or 'pid'} {pid} is not listening on {sorted(missing)} "
                            f"after {timeout:.0f} s")
        time.sleep(0.02)
