"""Generate betterproto code from protos/ into a directory.

Used by `nox -s protos` and by tests/test_protos_fresh.py.

Usage: python scripts/gen_protos.py OUT_DIR
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
GENERATED_DIR = ROOT / "meshcore" / "protos"


def generate(out_dir: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc finds protoc-gen-python_betterproto beside this interpreter.
    bin_dir = pathlib.Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
         f"--python_betterproto_out={out_dir}", *protos],
        check=True, capture_output=True, env=env,
    )


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]))
