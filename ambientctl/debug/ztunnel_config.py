"""`ambientctl ztunnel-config workloads|services|policies|certificates [--node N] [-o json]`.

Called through the subcommand `ambientctl.debug.register` adds. Reads one ztunnel's
`/config_dump` (admin_client) and prints the section as an aligned table (tables) or as the
dump's JSON for that section. What it shows is exactly the state that ztunnel holds: the same
frozen `meshcore.wds` types ztunnel routes and authorizes with, serialized by its admin endpoint.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from ambientctl.debug import admin_client, tables
from ambientctl.debug.admin_client import Resolver


def add_parser(subparsers: Any, resolver: Resolver) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ztunnel-config", help="show a ztunnel's workloads, services, policies or certificates",
        description="Read a ztunnel's admin /config_dump and print one section.")
    p.add_argument("section", choices=tables.SECTIONS)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--node", help="the node whose ztunnel to ask (sandbox node name)")
    where.add_argument("--admin", metavar="HOST:PORT",
                       help="the ztunnel admin address (default port 15000)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(debug_command=lambda args, out: run(args, out, resolver))
    return p


def run(args: argparse.Namespace, out: TextIO, resolver: Resolver) -> int:
    host, port = admin_client.admin_address(args.admin, args.node, resolver)
    dump = admin_client.fetch_config_dump(host, port, node=args.node)
    out.write(format_section(dump, args.section, args.output) + "\n")
    return 0


def format_section(dump: dict[str, Any], section: str, output: str) -> str:
    """The section of a config dump as a table or as JSON."""
    if output == "json":
        return json.dumps(dump.get(section, []), indent=2, sort_keys=True)
    return tables.render_section(section, dump)
