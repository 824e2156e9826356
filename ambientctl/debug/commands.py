"""The `why` and `analyze` subcommands: argument parsing and output.

Called through `ambientctl.debug.register`. The work is in why.py / why_render.py and
analyze.py (pure); this module loads the state, prints text or JSON, and sets the exit code:
`why` 0 (the verdict is in the output), `analyze` 1 when any finding is an error.
Sources: `analyze` reads `-f MANIFEST_DIR` (state.py); `why` reads either that or a running
ztunnel's `/config_dump` (live.py), at `--ztunnel-admin HOST:PORT` or, in the sandbox,
`--node NODE` through the registered `Resolver` (as `ztunnel-config --node` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, TextIO

from ambientctl.debug import admin_client, live, why_render
from ambientctl.debug import why as why_mod
from ambientctl.debug.admin_client import Resolver
from ambientctl.debug.analyze import analyze
from ambientctl.debug.errors import DebugError
from ambientctl.debug.state import MeshState, load_folder
from ambientctl.debug.why_l7 import HttpRequest
from istiod_lite.translate import MeshConfig

FOLDER_HELP = "the manifest folder istiod-lite reads (the sandbox's config folder)"


def _source_args(p: argparse.ArgumentParser, *, folder: bool = True) -> None:
    if folder:
        p.add_argument("-f", "--folder", required=True, metavar="MANIFEST_DIR", help=FOLDER_HELP)
    p.add_argument("--root-namespace", default="istio-system",
                   help="the mesh root namespace (default istio-system)")
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def _load(args: argparse.Namespace, *, assume_captured: bool = False) -> MeshState:
    mesh = MeshConfig(trust_domain=args.trust_domain, root_namespace=args.root_namespace)
    return load_folder(args.folder, mesh, assume_captured=assume_captured)


def add_why_parser(subparsers: Any, resolver: Resolver) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "why", help="would the mesh allow SRC to connect to DST:PORT, and which policy decides",
        description="Follow a connection as ztunnel (and the waypoint) would and evaluate it "
        "with ztunnel's own authorization code. SRC: NAMESPACE/POD or an IP. DST: "
        "NAMESPACE/POD, NAMESPACE/SERVICE (pod/... or svc/... to be explicit), a service "
        "hostname, or an IP (pod or service VIP). The state comes from a manifest folder (-f) "
        "or from a running ztunnel's admin /config_dump (--ztunnel-admin; in the sandbox "
        "--node, or nothing for the ztunnel of SRC's node); the output's first line says "
        "which. When the path goes through a waypoint, the HTTP request options evaluate the "
        "waypoint's L7 AuthorizationPolicies (targetRefs) as the waypoint would (-f only: a "
        "live ztunnel does not hold them).")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST:PORT")
    p.add_argument("--endpoint", metavar="POD",
                   help="the endpoint to assume when a service has several (default: first "
                   "by name)")
    p.add_argument("--assume-captured", action="store_true",
                   help="treat pods that should be enrolled as captured, as if the node agent "
                   "had run (for folders without pod status overlays; -f only)")
    http = p.add_argument_group(
        "HTTP request, evaluated by the waypoint's L7 policies when the path has a waypoint "
        "(any of these makes one; the others default)")
    http.add_argument("--method", metavar="METHOD", help="request method (default GET)")
    http.add_argument("--path", metavar="PATH",
                      help="request path, optionally with ?query (default /)")
    http.add_argument("--header", "-H", metavar="NAME=VALUE", action="append", dest="headers",
                      help="a request header (repeatable); request.headers[NAME] conditions "
                      "see it")
    http.add_argument("--host", metavar="HOST",
                      help="the Host / :authority (default: the Service's hostname, or the "
                      "dialed IP:PORT for a pod)")
    where = p.add_argument_group(
        "where the state comes from (at most one; none: in the sandbox, live from the ztunnel "
        "of SRC's node)")
    source = where.add_mutually_exclusive_group()
    source.add_argument("-f", "--folder", metavar="MANIFEST_DIR", help=FOLDER_HELP)
    source.add_argument("--ztunnel-admin", "--admin", metavar="HOST:PORT", dest="ztunnel_admin",
                        help="live: the workloads, services and policies a running ztunnel "
                        f"holds, from its admin /config_dump (default port "
                        f"{admin_client.DEFAULT_ADMIN_PORT})")
    source.add_argument("--node", help="live, in the sandbox: that node's ztunnel")
    _source_args(p, folder=False)
    p.set_defaults(debug_command=lambda args, out: run_why(args, out, resolver))
    return p


def _load_why(args: argparse.Namespace, resolver: Resolver) -> MeshState:
    if args.folder:
        return _load(args, assume_captured=args.assume_captured)
    if args.assume_captured:
        raise DebugError("--assume-captured applies to -f MANIFEST_DIR only: a live ztunnel's "
                         "state is what it is")
    node = args.node
    if not args.ztunnel_admin and not node:
        node = resolver.node_of(args.source)
    host, port = admin_client.admin_address(args.ztunnel_admin, node, resolver)
    mesh = MeshConfig(trust_domain=args.trust_domain, root_namespace=args.root_namespace)
    return live.load_live(host, port, mesh, node=node)


def run_why(args: argparse.Namespace, out: TextIO, resolver: Resolver) -> int:
    state = _load_why(args, resolver)
    request = HttpRequest.from_options(args.method, args.path, args.host, args.headers)
    result = why_mod.why(state, args.source, args.destination, endpoint=args.endpoint,
                         request=request)
    if args.output == "json":
        out.write(json.dumps(why_render.to_dict(state, result), indent=2) + "\n")
    else:
        out.write(why_render.render(state, result) + "\n")
    return 0


def add_analyze_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "analyze", help="find common ambient misconfigurations and say how to fix them",
        description="Check a manifest folder for ambient misconfigurations. Exit code 1 when "
        "any finding is an error.")
    _source_args(p)
    p.set_defaults(debug_command=run_analyze)
    return p


def run_analyze(args: argparse.Namespace, out: TextIO) -> int:
    state = _load(args)
    assert state.model is not None  # a folder always has one
    findings = analyze(state.model, state.mesh, state.diagnostics)
    if args.output == "json":
        out.write(json.dumps([dataclasses.asdict(f) for f in findings], indent=2) + "\n")
    elif findings:
        out.write("\n".join(f.render() for f in findings) + "\n")
        errors = sum(f.severity == "error" for f in findings)
        out.write(f"\n{errors} error(s), {len(findings) - errors} warning(s)\n")
    else:
        out.write("no problems found\n")
    return 1 if any(f.severity == "error" for f in findings) else 0
