"""`ztunnel`: the ambient-py node proxy (HBONE, identities, L4 policy, in-pod listeners)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import trio

from ztunnel.app import run
from ztunnel.config import ZtunnelConfig, parse_host_port
from ztunnel.errors import ZtunnelError


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="ztunnel",
        description=(
            "Per-node L4 proxy: receives config from istiod-lite (Delta xDS), certificates from "
            "its CA, and the node's pods from the CNI node agent (ZDS); serves each pod from "
            "inside its network namespace. Flags default to Istio ztunnel's environment variables."
        ),
    )
    p.add_argument("--node", default=env("NODE_NAME"), help="this node's name (env NODE_NAME)")
    p.add_argument("--xds-address", default=env("XDS_ADDRESS", "istiod.istio-system.svc:15012"),
                   help="istiod-lite xDS HOST:PORT (env XDS_ADDRESS; default %(default)s)")
    p.add_argument("--ca-address", default=env("CA_ADDRESS"),
                   help="CA HOST:PORT (env CA_ADDRESS; default: the xDS address)")
    p.add_argument("--root-cert", type=Path,
                   default=Path(env("XDS_ROOT_CA", "/var/run/secrets/istio/root-cert.pem")),
                   help="root certificate that istiod-lite's TLS chains to")
    p.add_argument("--token-file", type=Path,
                   default=Path(env("AUTH_TOKEN", "/var/run/secrets/tokens/istio-token")),
                   help="bearer token presented to istiod-lite (re-read on every call)")
    p.add_argument("--cluster-id", default=env("CLUSTER_ID", "Kubernetes"))
    p.add_argument("--trust-domain", default=env("TRUST_DOMAIN", "cluster.local"))
    p.add_argument("--istiod-server-name", default="istiod.istio-system.svc",
                   help="name istiod-lite's certificate is verified against")
    p.add_argument("--zds-socket", default=env("INPOD_UDS", "/var/run/ztunnel/ztunnel.sock"),
                   help="the node agent's ZDS socket; 'none' disables in-pod mode")
    p.add_argument("--admin", default="127.0.0.1:15000", help="admin HOST:PORT (/config_dump)")
    p.add_argument("--metrics", default="0.0.0.0:15020", help="Prometheus HOST:PORT")
    p.add_argument("--readiness", default="0.0.0.0:15021", help="readiness HOST:PORT")
    p.add_argument("--pod-name", default=env("POD_NAME", "ztunnel"))
    p.add_argument("--pod-namespace", default=env("POD_NAMESPACE", "istio-system"))
    p.add_argument("--instance-ip", default=env("INSTANCE_IP", "127.0.0.1"))
    p.add_argument("--access-log-format", default=env("LOG_FORMAT", "text"),
                   choices=["text", "json"], help="access log lines as key=value or JSON")
    p.add_argument("--report-zds-sync", action=argparse.BooleanOptionalAction,
                   default=bool(env("KUBERNETES_SERVICE_HOST")),
                   help="annotate our pod ambient-py.io/zds-synced once pods are re-received "
                        "(the operator's rollout gate; default: on inside Kubernetes)")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    return p


def config_from_args(args: argparse.Namespace) -> ZtunnelConfig:
    if not args.node:
        raise ZtunnelError("ztunnel needs its node name: pass --node or set NODE_NAME")
    xds = parse_host_port(args.xds_address, 15012, "--xds-address")
    return ZtunnelConfig(
        node_name=args.node, xds_address=xds,
        ca_address=(parse_host_port(args.ca_address, 15012, "--ca-address")
                    if args.ca_address else xds),
        root_cert=args.root_cert, token_file=args.token_file, cluster_id=args.cluster_id,
        trust_domain=args.trust_domain, istiod_server_name=args.istiod_server_name,
        zds_socket=None if args.zds_socket == "none" else Path(args.zds_socket),
        admin_address=parse_host_port(args.admin, 15000, "--admin"),
        metrics_address=parse_host_port(args.metrics, 15020, "--metrics"),
        readiness_address=parse_host_port(args.readiness, 15021, "--readiness"),
        pod_name=args.pod_name, pod_namespace=args.pod_namespace, instance_ip=args.instance_ip,
        access_log_format=args.access_log_format,
        report_zds_sync=args.report_zds_sync,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        trio.run(run, config)
    except KeyboardInterrupt:
        return 0
    except ZtunnelError as exc:
        print(f"ztunnel: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
