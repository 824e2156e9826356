"""`waypoint`: the ambient-py L7 proxy for one waypoint Gateway (HBONE in, HTTP routing and
policy, HBONE out). Flags default to the environment variables of Istio's waypoint pods."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import trio

from waypoint.app import run
from waypoint.config import WaypointConfig, parse_host_port, parse_identity
from waypoint.errors import WaypointError


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="waypoint",
        description="L7 proxy for a waypoint Gateway: takes HBONE from ztunnels, applies "
                    "HTTPRoutes and L7 AuthorizationPolicies, forwards over HBONE.")
    p.add_argument("--name", default=env("GATEWAY_NAME") or env("SERVICE_ACCOUNT"),
                   help="the waypoint Gateway's name (env GATEWAY_NAME)")
    p.add_argument("--namespace", default=env("POD_NAMESPACE"),
                   help="the Gateway's namespace (env POD_NAMESPACE)")
    p.add_argument("--identity", default=None,
                   help="our SPIFFE id or <ns>/<sa> (default: <namespace>/<name>, the service "
                        "account the controller creates)")
    p.add_argument("--xds-address", default=env("XDS_ADDRESS", "istiod.istio-system.svc:15012"))
    p.add_argument("--ca-address", default=env("CA_ADDR"),
                   help="CA HOST:PORT (env CA_ADDR; default: the xDS address)")
    p.add_argument("--root-cert", type=Path,
                   default=Path(env("XDS_ROOT_CA", "/var/run/secrets/istio/root-cert.pem")))
    p.add_argument("--token-file", type=Path,
                   default=Path(env("AUTH_TOKEN", "/var/run/secrets/tokens/istio-token")))
    p.add_argument("--cluster-id", default=env("ISTIO_META_CLUSTER_ID", "Kubernetes"))
    p.add_argument("--trust-domain", default=env("TRUST_DOMAIN", "cluster.local"))
    p.add_argument("--istiod-server-name", default="istiod.istio-system.svc")
    p.add_argument("--listen", default="0.0.0.0:15008", help="HBONE HOST:PORT")
    p.add_argument("--upstream-hbone-port", type=int, default=15008,
                   help="port of the destination ztunnels' HBONE listener")
    p.add_argument("--admin", default="127.0.0.1:15000")
    p.add_argument("--metrics", default="0.0.0.0:15020")
    p.add_argument("--readiness", default="0.0.0.0:15021")
    p.add_argument("--pod-name", default=env("POD_NAME", "waypoint"))
    p.add_argument("--instance-ip", default=env("INSTANCE_IP", "127.0.0.1"))
    p.add_argument("--access-log-format", default="text", choices=["text", "json"])
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    return p


def config_from_args(args: argparse.Namespace) -> WaypointConfig:
    if not args.name or not args.namespace:
        raise WaypointError("the waypoint needs its Gateway: pass --name and --namespace")
    identity = parse_identity(args.identity or f"{args.namespace}/{args.name}",
                              args.trust_domain)
    xds = parse_host_port(args.xds_address, 15012, "--xds-address")
    return WaypointConfig(
        name=args.name, namespace=args.namespace, identity=identity, xds_address=xds,
        ca_address=parse_host_port(args.ca_address, 15012, "--ca-address")
        if args.ca_address else xds,
        root_cert=args.root_cert, token_file=args.token_file,
        listen=parse_host_port(args.listen, 15008, "--listen"),
        admin_address=parse_host_port(args.admin, 15000, "--admin"),
        metrics_address=parse_host_port(args.metrics, 15020, "--metrics"),
        readiness_address=parse_host_port(args.readiness, 15021, "--readiness"),
        cluster_id=args.cluster_id, istiod_server_name=args.istiod_server_name,
        pod_name=args.pod_name, instance_ip=args.instance_ip,
        upstream_hbone_port=args.upstream_hbone_port, access_log_format=args.access_log_format)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        trio.run(run, config)
    except KeyboardInterrupt:
        return 0
    except WaypointError as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
