"""The `why` and `analyze` subcommands: argument parsing and output, over `-f MANIFEST_DIR`.

Called through `ambientctl.debug.register`. The work is in why.py / why_render.py and
analyze.py (pure); this module reads the folder (state.py), prints text or JSON, and sets the
exit code: `why` 0 (the verdict is in the output), `analyze` 1 when any finding is an error.
A live source (the state a running ztunnel holds) is not implemented yet: `-f` is required.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, TextIO

from ambientctl.debug import why as why_mod
from ambientctl.debug import why_render
from ambientctl.debug.analyze import analyze
from ambientctl.debug.state import MeshState, load_folder
from istiod_lite.translate import MeshConfig


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--folder", required=True, metavar="MANIFEST_DIR",
                   help="the manifest folder istiod-lite reads (the sandbox's config folder)")
    p.add_argument("--root-namespace", default="istio-system",
                   help="the mesh root namespace (default istio-system)")
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def _load(args: argparse.Namespace, *, assume_captured: bool = False) -> MeshState:
    mesh = MeshConfig(trust_domain=args.trust_domain, root_namespace=args.root_namespace)
    return load_folder(args.folder, mesh, assume_captured=assume_captured)


def add_why_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "why", help="would the mesh allow SRC to connect to DST:PORT, and which policy decides",
        description="Follow a connection as ztunnel (and the waypoint) would and evaluate it "
        "with ztunnel's own authorization code. SRC: NAMESPACE/POD or an IP. DST: "
        "NAMESPACE/POD, NAMESPACE/SERVICE (pod/... or svc/... to be explicit), a service "
        "hostname, or an IP (pod or service VIP).")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST:PORT")
    p.add_argument("--endpoint", metavar="POD",
                   help="the endpoint to assume when a service has several (default: first "
                   "by name)")
    p.add_argument("--assume-captured", action="store_true",
                   help="treat pods that should be enrolled as captured, as if the node agent "
                   "had run (for folders without pod status overlays)")
    _source_args(p)
    p.set_defaults(debug_command=run_why)
    return p


def run_why(args: argparse.Namespace, out: TextIO) -> int:
    state = _load(args, assume_captured=args.assume_captured)
    result = why_mod.why(state, args.source, args.destination, endpoint=args.endpoint)
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
