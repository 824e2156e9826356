"""`python -m istiod_lite.operator`: run the operator cluster-wide (the Helm chart's command).

Logs in in-cluster (service account) or from the kubeconfig, builds the registry
(`handlers.build_registry`) and runs kopf until SIGINT/SIGTERM. `--verbose` turns on debug logs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from istiod_lite.operator import api, controller, handlers


async def run(*, rollout_interval: float) -> None:
    client = api.Api()
    registry = handlers.build_registry(controller.Operator(client),
                                       rollout_interval=rollout_interval)
    try:
        await kopf.operator(registry=registry, settings=handlers.default_settings(),
                            clusterwide=True, standalone=True)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m istiod_lite.operator",
                                     description="the ambient-py operator")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--rollout-interval", type=float, default=10.0,
                        help="seconds between rollout re-evaluations (besides pod events)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(rollout_interval=args.rollout_interval))


if __name__ == "__main__":
    main()
