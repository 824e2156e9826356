"""Proxy-pair launchers: start an HBONE client proxy in namespace A and an HBONE server proxy in
namespace B as subprocesses, for the benchmark (and usable by interop tests).

Who calls it: `bench.hbone_section` (one launcher per proxied case). A launcher gets a
`ProxyPairSpec` — where the client listens and which `:authority` each listener tunnels to, the
server's HBONE address (B:15008), the credentials — and returns a `RunningPair` whose pids the
benchmark measures (CPU, peak RSS) and which it stops afterwards.

The contract for our implementation (`OursPairLauncher`): the program `python -m
bench.hbone_proxy` with the argv built by `ours_client_argv` / `ours_server_argv`. Until that
program exists (it is written against `meshcore.hbone_trio`'s client and server), the case says
"not available" with the reason; it never reports numbers it did not measure.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import subprocess
import sys
from typing import Protocol

from bench.procstat import wait_listening
from tests.support.creds import TlsFiles
from tests.support.envoy import EnvoyProcess, hbone_client_bootstrap, hbone_server_bootstrap
from tests.support.netns import Netns

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Tunnel:
    """Plain TCP accepted on `listen` (in the client namespace) is tunnelled to `authority`."""

    listen: tuple[str, int]
    authority: str


@dataclasses.dataclass(frozen=True)
class ProxyPairSpec:
    client_ns: Netns
    server_ns: Netns
    server_listen: tuple[str, int]
    tunnels: tuple[Tunnel, ...]
    client_tls: TlsFiles
    server_tls: TlsFiles
    workdir: pathlib.Path
    concurrency: int = 1


class RunningPair(Protocol):
    def pids(self) -> dict[str, int]:
        """{"client": pid, "server": pid} of the processes to measure."""
        ...

    def log_tail(self) -> str: ...

    def stop(self) -> None: ...


class PairLauncher(Protocol):
    name: str

    def unavailable_reason(self) -> str | None:
        """None when this pair can run here; otherwise why not, in one line."""
        ...

    def start(self, spec: ProxyPairSpec) -> RunningPair: ...


@dataclasses.dataclass
class EnvoyPair:
    client: EnvoyProcess
    server: EnvoyProcess

    def pids(self) -> dict[str, int]:
        return {"client": self.client.pid, "server": self.server.pid}

    def log_tail(self) -> str:
        return self.client.log_tail(20) + "\n" + self.server.log_tail(20)

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()


class EnvoyPairLauncher:
    """Envoy 1.40 on both sides, configured by tests/support/envoy.py (TLS 1.3, ztunnel windows)."""

    name = "envoy"

    def unavailable_reason(self) -> str | None:
        from tests.support.envoy import EnvoyError, envoy_binary

        try:
            envoy_binary()
        except EnvoyError as exc:
            return str(exc)
        return None

    def start(self, spec: ProxyPairSpec) -> EnvoyPair:
        server = EnvoyProcess(
            hbone_server_bootstrap(listen=spec.server_listen, tls=spec.server_tls, target=None,
                                   allowed_client_ids=[spec.client_tls.identity.uri]),
            spec.workdir, name="envoy-server", netns=spec.server_ns,
            concurrency=spec.concurrency, log_level="warning",
        )
        first, *rest = spec.tunnels
        client = EnvoyProcess(
            hbone_client_bootstrap(
                listen=first.listen, server=spec.server_listen, authority=first.authority,
                tls=spec.client_tls, expected_server_id=spec.server_tls.identity.uri,
                extra_tunnels=[(t.listen, t.authority) for t in rest],
            ),
            spec.workdir, name="envoy-client", netns=spec.client_ns,
            concurrency=spec.concurrency, log_level="warning",
        )
        pair = EnvoyPair(client, server)
        try:
            server.start()
            client.start()
        except BaseException:
            pair.stop()
            raise
        return pair


def ours_server_argv(spec: ProxyPairSpec) -> list[str]:
    host, port = spec.server_listen
    tls = spec.server_tls
    return [
        sys.executable, "-m", "bench.hbone_proxy", "server",
        "--listen", f"{host}:{port}",
        "--cert", str(tls.cert_chain), "--key", str(tls.private_key), "--root", str(tls.root),
        "--allow-client", spec.client_tls.identity.uri,
    ]


def ours_client_argv(spec: ProxyPairSpec) -> list[str]:
    host, port = spec.server_listen
    tls = spec.client_tls
    argv = [
        sys.executable, "-m", "bench.hbone_proxy", "client",
        "--server", f"{host}:{port}",
        "--expect-server", spec.server_tls.identity.uri,
        "--cert", str(tls.cert_chain), "--key", str(tls.private_key), "--root", str(tls.root),
    ]
    for tunnel in spec.tunnels:
        argv += ["--tunnel", f"{tunnel.listen[0]}:{tunnel.listen[1]}={tunnel.authority}"]
    return argv


@dataclasses.dataclass
class ProcessPair:
    client: subprocess.Popen[bytes]
    server: subprocess.Popen[bytes]
    logs: tuple[pathlib.Path, pathlib.Path]

    def pids(self) -> dict[str, int]:
        return {"client": self.client.pid, "server": self.server.pid}

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
            for p in self.logs if p.exists()
        )

    def stop(self) -> None:
        for proc in (self.client, self.server):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class OursPairLauncher:
    """Our trio HBONE client and server, one process each (`python -m bench.hbone_proxy`)."""

    name = "ours"

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("meshcore.hbone_trio") is None:
            return "meshcore.hbone_trio is not importable"
        if not (REPO_ROOT / "bench" / "hbone_proxy.py").exists():
            return ("meshcore.hbone_trio has no client/server yet, so bench/hbone_proxy.py "
                    "(our proxy pair program) is not written")
        from bench import hbone_proxy

        return hbone_proxy.missing_api()

    def start(self, spec: ProxyPairSpec) -> ProcessPair:
        logs = (spec.workdir / "ours-client.log", spec.workdir / "ours-server.log")
        spec.workdir.mkdir(parents=True, exist_ok=True)
        with open(logs[1], "wb") as server_log:
            server = spec.server_ns.popen(ours_server_argv(spec), cwd=REPO_ROOT,
                                          stdout=server_log, stderr=subprocess.STDOUT)
        with open(logs[0], "wb") as client_log:
            client = spec.client_ns.popen(ours_client_argv(spec), cwd=REPO_ROOT,
                                          stdout=client_log, stderr=subprocess.STDOUT)
        pair = ProcessPair(client, server, logs)
        try:
            wait_listening(server.pid, {spec.server_listen[1]}, what="our HBONE server")
            wait_listening(client.pid, {t.listen[1] for t in spec.tunnels},
                           what="our HBONE client")
        except BaseException:
            pair.stop()
            raise
        return pair
