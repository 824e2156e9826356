"""`python -m cni_plugin.agent [--socket PATH] [--zds-socket PATH | --no-zds]`: the node agent.

Serves the plugin (`server.serve_agent`) and, unless `--no-zds`, ztunnel (`zds_server.serve_zds`)
in one trio nursery. Enrols every Kubernetes pod the plugin reports (`server.enroll_all`) until
the label-driven enrollment decision is wired in. Logs to stderr.
"""

from __future__ import annotations

import argparse
import logging

import trio

from cni_plugin.agent.server import Agent, serve_agent
from cni_plugin.agent.zds_server import DEFAULT_ZDS_SOCKET, ZdsServer, serve_zds
from cni_plugin.agent_protocol import DEFAULT_AGENT_SOCKET


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cni_plugin.agent")
    parser.add_argument("--socket", default=DEFAULT_AGENT_SOCKET)
    parser.add_argument("--zds-socket", default=DEFAULT_ZDS_SOCKET)
    parser.add_argument("--no-zds", action="store_true", help="do not serve ztunnel (rules only)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    trio.run(_run, args)


async def _run(args: argparse.Namespace) -> None:
    zds = None if args.no_zds else ZdsServer()
    async with trio.open_nursery() as nursery:
        if zds is not None:
            await nursery.start(serve_zds, args.zds_socket, zds)
        await nursery.start(serve_agent, args.socket, Agent(zds=zds))


if __name__ == "__main__":
    main()
