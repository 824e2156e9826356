"""Loopback throughput of our HBONE pair: TCP source -> HBONE client -> HBONE server -> TCP sink.

Run: `python -m bench.hbone_loopback [--seconds 5] [--streams 1] [--profile client|server]`;
`--pingpong N` measures N 64-byte round trips (p50/p99, `bench.pingpong`) instead of iperf3,
with each proxy's CPU per round trip; `PROFILE_TOP=N` sets how many profile rows are printed.

Topology (all on 127.0.0.1, no namespaces needed): iperf3 server (the sink, port 5201); our
HBONE server proxy process (mTLS on an ephemeral port, relays each CONNECT to the sink); our
HBONE client proxy process (plain TCP listener, each accepted connection becomes a CONNECT
tunnel to the server proxy); iperf3 client (the source) dials the client proxy. So the proxies
run as two processes, like the Envoy pair it is compared with (DESIGN §6: 10.9 Gbit/s). Without
iperf3 a Python source/sink process stands in (it costs more CPU, so numbers are lower).

`--profile client|server` runs that proxy under cProfile and prints its top functions.
`--strace client|server` attaches `strace -c -f` to that proxy for the measurement and prints
its syscall counts (deterministic, unlike timings on a shared machine: e.g. recvfrom calls and
EAGAIN errors per round trip).
Certificates come from meshcore.pki, written to a temporary directory for the child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import json
import os
import pathlib
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import trio

from meshcore import pki, tlsconfig
from meshcore.hbone_trio import (
    ConnectOutcome,
    ConnectRequest,
    open_hbone_client,
    relay,
    serve_hbone,
)
from meshcore.identity import SpiffeId

CLIENT_ID = SpiffeId("cluster.local", "bench", "client")
SERVER_ID = SpiffeId("cluster.local", "bench", "server")


def write_credentials(directory: pathlib.Path) -> None:
    now = dt.datetime.now(dt.UTC)
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=1), now=now)
    (directory / "roots.pem").write_bytes(pki.cert_pem(root.certificate))
    for name, identity in (("client", CLIENT_ID), ("server", SERVER_ID)):
        key = pki.new_private_key()
        leaf = pki.sign_workload_certificate(
            root, key.public_key(), identity, lifetime=dt.timedelta(hours=2), now=now
        )
        (directory / f"{name}.pem").write_bytes(pki.cert_pem(leaf))
        (directory / f"{name}.key").write_bytes(pki.private_key_pem(key))


def load_credentials(directory: pathlib.Path, name: str) -> tlsconfig.WorkloadCredentials:
    return tlsconfig.WorkloadCredentials.from_pem(
        (directory / f"{name}.pem").read_bytes(),
        (directory / f"{name}.key").read_bytes(),
        (directory / "roots.pem").read_bytes(),
    )


def _nodelay(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def run_server(creds_dir: pathlib.Path, port: int) -> None:
    creds = load_credentials(creds_dir, "server")

    async def handle(request: ConnectRequest) -> ConnectOutcome:
        try:
            upstream = await trio.open_tcp_stream(request.host, request.port)
        except OSError as exc:
            return ConnectOutcome.unreachable(str(exc))
        return ConnectOutcome.accept(upstream)

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    await serve_hbone(listeners, lambda local: creds, handle)


async def run_client(creds_dir: pathlib.Path, listen: int, hbone: int, authority: str) -> None:
    creds = load_credentials(creds_dir, "client")
    async with open_hbone_client() as client:

        async def handler(stream: trio.SocketStream) -> None:
            _nodelay(stream)
            tunnel = await client.connect(("127.0.0.1", hbone), authority, creds, [SERVER_ID])
            await relay(stream, tunnel)

        await trio.serve_tcp(handler, listen, host="127.0.0.1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    """True if something listens on TCP `port` (read from /proc; no probe connection)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _child(role: str, args: list[str], profile: str | None, workdir: pathlib.Path):  # type: ignore[no-untyped-def]
    argv = [sys.executable, "-m", "bench.hbone_loopback", "--role", role, *args]
    if profile == role:
        argv += ["--profile-out", str(workdir / f"{role}.prof")]
    return subprocess.Popen(argv, cwd=pathlib.Path(__file__).resolve().parent.parent)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _python_sink(port: int) -> subprocess.Popen:  # type: ignore[type-arg]
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('127.0.0.1',{port}));s.listen(16)\n"
        "while True:\n"
        " c,_=s.accept();b=bytearray(1<<20)\n"
        " while c.recv_into(b):pass\n"
        " c.close()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def _python_source(port: int, seconds: float) -> float:
    buf = b"\0" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as s:
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            s.sendall(buf)
            sent += len(buf)
        elapsed = time.monotonic() - start
    return sent * 8 / elapsed / 1e9


def measure(
    seconds: float,
    streams: int,
    profile: str | None,
    use_iperf: bool,
    pingpong: int = 0,
    trace: str | None = None,
) -> float:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="hbone-bench-"))
    procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
    tracer: subprocess.Popen | None = None  # type: ignore[type-arg]
    try:
        write_credentials(workdir)
        sink, hbone, listen = _free_port(), _free_port(), _free_port()
        if pingpong:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.pingpong", "serve", "--host", "127.0.0.1",
                 "--port", str(sink)], stdout=subprocess.DEVNULL,
                cwd=pathlib.Path(__file__).resolve().parent.parent,
            ))
        elif use_iperf:
            procs.append(subprocess.Popen(
                ["iperf3", "-s", "-p", str(sink), "-B", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
            ))
        else:
            procs.append(_python_sink(sink))
        procs.append(_child("server", ["--creds", str(workdir), "--hbone", str(hbone)],
                            profile, workdir))
        procs.append(_child("client", ["--creds", str(workdir), "--hbone", str(hbone),
                                       "--listen", str(listen),
                                       "--authority", f"127.0.0.1:{sink}"], profile, workdir))
        for port in (sink, hbone, listen):
            _wait_port(port)
        roles = ("server", "client")
        cpu0 = {name: _cpu_seconds(p.pid) for name, p in zip(roles, procs[1:], strict=True)}
        if trace:
            pid = procs[1 + roles.index(trace)].pid
            tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-o", str(workdir / "strace.txt"), "-p", str(pid)],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)  # let it attach
        busy0 = _machine_busy()
        if pingpong:
            out = subprocess.run(
                [sys.executable, "-m", "bench.pingpong", "client", "--host", "127.0.0.1",
                 "--port", str(listen), "--count", str(pingpong)],
                check=True, capture_output=True, text=True,
                cwd=pathlib.Path(__file__).resolve().parent.parent,
            ).stdout
            result = json.loads(out)
            per_rt = {name: (_cpu_seconds(p.pid) - cpu0[name]) * 1e6 / (pingpong + 200)
                      for name, p in zip(roles, procs[1:], strict=True)}
            print(f"  round trip 64 B: p50 {result['p50_us']:.0f} us,"
                  f" p99 {result['p99_us']:.0f} us; CPU-us per round trip: client proxy"
                  f" {per_rt['client']:.0f}, server proxy {per_rt['server']:.0f}", flush=True)
            return float(result["p50_us"])
        if use_iperf:
            out = subprocess.run(
                ["iperf3", "-c", "127.0.0.1", "-p", str(listen), "-t", str(seconds),
                 "-P", str(streams), "-J"],
                check=True, capture_output=True, text=True,
            ).stdout
            gbps = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
        else:
            gbps = _python_source(listen, seconds)
        cpu = {
            name: _cpu_seconds(p.pid) - cpu0[name]
            for name, p in zip(("server", "client"), procs[1:], strict=True)
        }
        busy = _machine_busy() - busy0
        gb = gbps * seconds / 8
        print(f"  CPU: client proxy {cpu['client']:.2f} s ({cpu['client'] / gb:.2f} s/GB),"
              f" server proxy {cpu['server']:.2f} s ({cpu['server'] / gb:.2f} s/GB);"
              f" whole machine busy {busy:.1f} of {seconds * (os.cpu_count() or 1):.1f} s",
              flush=True)
        return gbps
    finally:
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=10)
            with contextlib.suppress(OSError):
                print(f"  strace -c of the {trace} proxy:")
                print((workdir / "strace.txt").read_text(), flush=True)
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in reversed(procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        if profile:
            prof = workdir / f"{profile}.prof"
            if prof.exists():
                stats = pstats.Stats(str(prof))
                stats.sort_stats("tottime").print_stats(int(os.environ.get("PROFILE_TOP", "25")))
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["client", "server"])
    parser.add_argument("--creds", type=pathlib.Path)
    parser.add_argument("--hbone", type=int)
    parser.add_argument("--listen", type=int)
    parser.add_argument("--authority")
    parser.add_argument("--profile-out")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", choices=["client", "server"])
    parser.add_argument("--strace", choices=["client", "server"],
                        help="count that proxy's syscalls with strace -c during the measurement")
    parser.add_argument("--python-source", action="store_true", help="do not use iperf3")
    parser.add_argument("--pingpong", type=int, default=0, metavar="N",
                        help="measure N 64-byte round trips instead of throughput")
    args = parser.parse_args()
    if args.role:
        _run_role(args)
        return
    use_iperf = shutil.which("iperf3") is not None and not args.python_source
    results = []
    for _ in range(args.repeat):
        gbps = measure(
            args.seconds, args.streams, args.profile, use_iperf, args.pingpong, args.strace
        )
        results.append(gbps)
        if args.pingpong:
            continue
        print(f"HBONE loopback ({'iperf3' if use_iperf else 'python'} source,"
              f" {args.streams} stream(s)): {gbps:.2f} Gbit/s", flush=True)
    results.sort()
    unit = "us p50" if args.pingpong else "Gbit/s"
    print(f"median of {len(results)}: {results[len(results) // 2]:.2f} {unit}")


def _run_role(args: argparse.Namespace) -> None:
    if args.role == "server":
        coro_fn, coro_args = run_server, (args.creds, args.hbone)
    else:
        coro_fn, coro_args = run_client, (args.creds, args.listen, args.hbone, args.authority)
    profiler = cProfile.Profile() if args.profile_out else None
    try:
        if profiler:
            profiler.enable()
        trio.run(coro_fn, *coro_args)
    except BaseException as exc:  # measure() ends each child with SIGINT
        if not _only_interrupts(exc):
            raise
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
            os.sync()


def _only_interrupts(exc: BaseException) -> bool:
    """True if `exc` is KeyboardInterrupt, or a group (nursery) holding nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


if __name__ == "__main__":
    main()
