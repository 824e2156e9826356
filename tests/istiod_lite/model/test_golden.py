"""Golden tests: manifests in (`golden/<case>/input.yaml`), workload-API resources out.

Each case may add `mesh.yaml` (MeshConfig fields). `expected.yaml` holds the config
diagnostics, the rendered resources (IPs as text) and the status messages. Regenerate with
`UPDATE_GOLDEN=1 pytest tests/istiod_lite/model/test_golden.py` and review the diff by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from istiod_lite.translate import MeshConfig, render, translate
from meshcore.model import ClusterModel
from meshcore.model.folder import parse_file

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def run_case(case_dir: Path) -> dict:
    data = (case_dir / "input.yaml").read_bytes()
    parsed = parse_file("input.yaml", data, (0, 0, 0), None)
    mesh_file = case_dir / "mesh.yaml"
    mesh = MeshConfig(**yaml.safe_load(mesh_file.read_text())) if mesh_file.exists() else \
        MeshConfig()
    model = ClusterModel.from_objects(parsed.objects.values(),
                                      system_namespace=mesh.root_namespace)
    out = {"diagnostics": [str(d) for d in parsed.diagnostics]}
    out.update(render(translate(model, mesh)))
    return out


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    """The translation of the case's manifests matches its reviewed expected.yaml."""
    case_dir = GOLDEN / case
    actual = run_case(case_dir)
    expected_file = case_dir / "expected.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(yaml.safe_dump(actual, sort_keys=False, width=100))
    expected = yaml.safe_load(expected_file.read_text())
    assert actual == expected


def test_translation_is_deterministic() -> None:
    """Translating the same model twice gives byte-identical protobuf resources."""
    for case in CASES:
        parsed = parse_file("input.yaml", (GOLDEN / case / "input.yaml").read_bytes(),
                            (0, 0, 0), None)
        model = ClusterModel.from_objects(parsed.objects.values())
        a, b = translate(model), translate(model)
        assert {k: bytes(v) for k, v in a.addresses.items()} == \
            {k: bytes(v) for k, v in b.addresses.items()}
        assert {k: bytes(v) for k, v in a.authorizations.items()} == \
            {k: bytes(v) for k, v in b.authorizations.items()}
