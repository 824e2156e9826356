"""The container commands the operator writes are accepted by the real CLIs' argument parsers."""

from __future__ import annotations

import pytest

from istiod_lite import __main__ as istiod_cli
from istiod_lite.operator import components
from waypoint import __main__ as waypoint_cli
from ztunnel import __main__ as ztunnel_cli


@pytest.mark.parametrize(
    ("command", "parser"),
    [
        pytest.param(
            components.istiod_command(namespace="istio-system", trust_domain="cluster.local",
                                      log_level="info"),
            istiod_cli.build_parser(), id="istiod-lite",
        ),
        pytest.param(
            components.ztunnel_command(namespace="istio-system", trust_domain="cluster.local",
                                       log_level="info"),
            ztunnel_cli.build_parser(), id="ztunnel",
        ),
        pytest.param(
            components.waypoint_command(gateway="waypoint", system_namespace="istio-system",
                                        trust_domain="cluster.local"),
            waypoint_cli.build_parser(), id="waypoint",
        ),
    ],
)
def test_operator_command_parses(command: list[str], parser) -> None:  # type: ignore[no-untyped-def]
    """Every flag the operator passes exists in the component's CLI (argparse exits otherwise)."""
    args = parser.parse_args(command[1:])
    assert args is not None


def test_ztunnel_command_builds_a_config() -> None:
    """The ztunnel command yields a complete config (node name comes from NODE_NAME)."""
    command = components.ztunnel_command(namespace="istio-system", trust_domain="cluster.local",
                                         log_level="info")
    args = ztunnel_cli.build_parser().parse_args([*command[1:], "--node", "worker-1"])
    config = ztunnel_cli.config_from_args(args)
    assert config.xds_address == ("istiod-lite.istio-system.svc", 15012)
    assert str(config.root_cert) == "/var/run/secrets/istio/root-cert.pem"
