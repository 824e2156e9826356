"""The committed generated protobuf code matches what protos/ generates now."""

import filecmp
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
assert _spec and _spec.loader
gen_protos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_protos)


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    """Regenerating meshcore/protos from protos/ changes nothing (else: `nox -s protos`)."""
    gen_protos.generate(tmp_path)
    generated = gen_protos.GENERATED_DIR
    differs = [
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.py")
        if not (generated / p.relative_to(tmp_path)).exists()
        or not filecmp.cmp(p, generated / p.relative_to(tmp_path), shallow=False)
    ]
    extra = [
        str(p.relative_to(generated)) for p in generated.rglob("*.py")
        if not (tmp_path / p.relative_to(generated)).exists()
    ]
    assert not differs and not extra, (
        f"meshcore/protos is stale (differs: {differs}, extra: {extra}); run `nox -s protos`"
    )
