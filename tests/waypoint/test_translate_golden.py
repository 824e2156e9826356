"""Golden tests: manifests in (`golden/<case>.yaml`), waypoint resources out.

`routes.yaml` → `ambient.waypoint.v1.RouteConfiguration`, `l7_policies.yaml` →
`ambient.waypoint.v1.L7Authorization`, both rendered as proto3 JSON dicts plus the status
messages, compared with `golden/<case>.expected.yaml`. Regenerate with
`UPDATE_GOLDEN=1 pytest tests/waypoint/test_translate_golden.py` and review the diff by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiod_lite.translate.l7_policies import L7_AUTHORIZATION_TYPE_URL, translate_l7_policies
from istiod_lite.translate.routes import ROUTE_CONFIGURATION_TYPE_URL, translate_routes
from meshcore.model import ClusterModel
from meshcore.model.folder import parse_file
from meshcore.protos.ambient.waypoint import v1 as pb
from waypoint.policy import L7Policy
from waypoint.routing import RouteTable

GOLDEN = Path(__file__).parent / "golden"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _model(case: str) -> ClusterModel:
    parsed = parse_file(f"{case}.yaml", (GOLDEN / f"{case}.yaml").read_bytes(), (0, 0, 0), None)
    assert not parsed.diagnostics
    return ClusterModel.from_objects(parsed.objects.values())


def _render(case: str) -> dict[str, Any]:
    model = _model(case)
    routes, s1 = translate_routes(model)
    policies, s2 = translate_l7_policies(model)
    return {
        ROUTE_CONFIGURATION_TYPE_URL: {k: routes[k].to_dict() for k in sorted(routes)},
        L7_AUTHORIZATION_TYPE_URL: {k: policies[k].to_dict() for k in sorted(policies)},
        "statuses": sorted(str(s) for s in s1 + s2),
    }


@pytest.mark.parametrize("case", ["routes", "l7_policies"])
def test_golden(case: str) -> None:
    """The translation of the case's manifests matches its reviewed expected file."""
    actual = _render(case)
    expected_file = GOLDEN / f"{case}.expected.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(yaml.dump(actual, Dumper=_NoAliases, sort_keys=False,
                                           width=100))
    assert actual == yaml.safe_load(expected_file.read_text())


@pytest.mark.parametrize("case", ["routes", "l7_policies"])
def test_resources_pass_the_proxy_gates(case: str) -> None:
    """Every translated resource survives the wire and the waypoint's from_proto gate."""
    model = _model(case)
    routes, _ = translate_routes(model)
    policies, _ = translate_l7_policies(model)
    for msg in routes.values():
        table = RouteTable.from_proto(pb.RouteConfiguration.FromString(bytes(msg)))
        assert table.name == msg.name
    for msg in policies.values():
        policy = L7Policy.from_proto(pb.L7Authorization.FromString(bytes(msg)))
        assert policy.key == f"{msg.namespace}/{msg.name}"


def test_translation_is_deterministic() -> None:
    """Translating the same model twice gives byte-identical resources."""
    model = _model("routes")
    a, _ = translate_routes(model)
    b, _ = translate_routes(model)
    assert {k: bytes(v) for k, v in a.items()} == {k: bytes(v) for k, v in b.items()}
