"""`istiod-lite`: the ambient-py control plane (xDS workload API + CA) on one gRPC port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from istiod_lite.app import IstiodConfig, run
from istiod_lite.errors import IstiodLiteError
from istiod_lite.translate import MeshConfig
from meshcore.addresses import split_host_port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="istiod-lite",
        description=(
            "Serve Istio's workload API over Delta xDS and Istio's certificate API "
            "(CreateCertificate) on one TLS gRPC port, from a folder of Kubernetes manifests."
        ),
    )
    parser.add_argument("--manifests", type=Path, metavar="DIR",
                        help="folder of YAML manifests to watch (the sandbox's config source)")
    parser.add_argument("--kubernetes", action="store_true",
                        help="watch the Kubernetes API (in-cluster or KUBECONFIG) instead")
    parser.add_argument("--namespace", action="append", default=[], metavar="NS",
                        help="with --kubernetes: watch only these namespaces (default: all)")
    parser.add_argument("--trusted-node-account", action="append", default=[],
                        metavar="NS/SA", type=_account,
                        help="with --kubernetes: service account(s) of node proxies, which may "
                             "ask for identities of pods on their node (repeatable; default: "
                             "<root namespace>/ztunnel)")
    parser.add_argument("--ca-dir", type=Path, metavar="DIR",
                        help="where the root CA lives (created on first start)")
    parser.add_argument("--ca-cert", type=Path, metavar="FILE",
                        help="root CA certificate to use instead of --ca-dir (a mounted Secret)")
    parser.add_argument("--ca-key", type=Path, metavar="FILE", help="its private key")
    parser.add_argument("--ready", metavar="HOST:PORT",
                        help="serve GET /ready here (200 once config is served)")
    parser.add_argument("--tokens", type=Path, metavar="FILE",
                        help="YAML list of bearer tokens: {token, node} or {token, identity}")
    parser.add_argument("--listen", default="0.0.0.0:15012", metavar="HOST:PORT",
                        help="gRPC address for xDS and the CA (default %(default)s)")
    parser.add_argument("--trust-domain", default="cluster.local")
    parser.add_argument("--cluster-id", default="Kubernetes")
    parser.add_argument("--root-namespace", default="istio-system",
                        help="policies here without selector apply mesh-wide (%(default)s)")
    parser.add_argument("--dns-name", action="append", default=[], metavar="NAME",
                        help="extra DNS SAN for istiod-lite's serving certificate (repeatable)")
    parser.add_argument("--ip", action="append", default=[], metavar="ADDR",
                        help="IP SAN for the serving certificate (repeatable)")
    parser.add_argument("--root-cert-out", type=Path, metavar="FILE",
                        help="write the root certificate here for clients to trust")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser


def _account(text: str) -> tuple[str, str]:
    from istiod_lite.ca.k8s_auth import parse_account

    try:
        return parse_account(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _run_kubernetes(config: IstiodConfig, namespaces: list[str],
                          trusted_node_accounts: list[tuple[str, str]]) -> None:
    # Imported here: the folder-only sandbox never loads kopf.
    from istiod_lite.ca.k8s_auth import KubernetesTokenAuthenticator
    from istiod_lite.config.kubernetes import KubernetesSource, istiod_client

    source = KubernetesSource(namespaces=namespaces,
                              system_namespace=config.mesh.root_namespace)
    # A client of its own: the source's lives on the kopf thread's loop, this one on ours.
    async with istiod_client() as client:
        authenticator = KubernetesTokenAuthenticator(
            client, trust_domain=config.mesh.trust_domain,
            trusted_node_accounts=trusted_node_accounts or
            [(config.mesh.root_namespace, "ztunnel")],
            model=lambda: source.snapshot.model if source.synced else None)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(source.run())
            tasks.create_task(run(config, source=source, authenticator=authenticator))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = split_host_port(args.listen, 15012, empty_host="0.0.0.0")
        ready = split_host_port(args.ready, 15021, empty_host="0.0.0.0") if args.ready else None
    except ValueError as exc:
        print(f"istiod-lite: --listen/--ready: {exc}; expected HOST:PORT", file=sys.stderr)
        return 2
    if args.ca_dir is None and (args.ca_cert is None or args.ca_key is None):
        print("istiod-lite: give --ca-dir DIR, or both --ca-cert FILE and --ca-key FILE",
              file=sys.stderr)
        return 2
    if (args.manifests is None) == (not args.kubernetes):
        print("istiod-lite: give exactly one config source: --manifests DIR or --kubernetes",
              file=sys.stderr)
        return 2
    config = IstiodConfig(
        manifests=args.manifests, ca_dir=args.ca_dir, tokens_file=args.tokens,
        host=host, port=port,
        mesh=MeshConfig(trust_domain=args.trust_domain, root_namespace=args.root_namespace,
                        cluster_id=args.cluster_id),
        dns_names=args.dns_name, ip_addresses=args.ip, root_cert_out=args.root_cert_out,
        ca_cert=args.ca_cert, ca_key=args.ca_key,
        ready_address=ready,
    )
    try:
        asyncio.run(_run_kubernetes(config, args.namespace, args.trusted_node_account)
                    if args.kubernetes else run(config))
    except KeyboardInterrupt:
        return 0
    except IstiodLiteError as exc:
        print(f"istiod-lite: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
