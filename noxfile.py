"""Developer and CI sessions: tests, lint, protos, bench.

`nox -s tests` is the README's test command and the one `.ci/run` calls. It runs the whole
suite, including the tests marked `netns` that need root; run `nox -s tests -- -m "not netns"`
for the quick layer alone. `nox -s demo` is the README's demo command (root).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

ROOT = pathlib.Path(__file__).parent
GENERATED_DIR = ROOT / "meshcore" / "protos"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite (unit, component, interop with Envoy, namespace tests as root)."""
    session.install("-e", ".[test,protos]")
    args = session.posargs or ["-q"]
    session.run("pytest", *args, env={"PYTHONDONTWRITEBYTECODE": "1"})


# What the demo needs from the system on Debian/Ubuntu: the sandbox itself programs the kernel
# through pyroute2 (netlink) only; iproute2 and nftables are for looking at it by hand
# (`ip netns exec amb-demo-pod-shop-client nft list ruleset`), as `.ci/run` installs them.
DEMO_DEBIAN_PACKAGES = ["iproute2", "nftables"]


@nox.session  # the interpreter nox runs with (3.11 or newer), so a stock distribution works
def demo(session: nox.Session) -> None:
    """`ambientctl sandbox demo` on a fresh sandbox: the checklist of what the mesh proves.

    Needs root (network namespaces, nftables in pod namespaces). Extra arguments go to the
    demo (`nox -s demo -- --keep` leaves the sandbox up).
    """
    if os.geteuid() != 0:
        session.error("the demo builds network namespaces and needs root: sudo nox -s demo")
    if shutil.which("apt-get") and not all(shutil.which(t) for t in ("ip", "nft")):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    *DEMO_DEBIAN_PACKAGES, external=True, env=env)
    session.install("-e", ".")
    session.run("ambientctl", "sandbox", "--name", "demo", "demo", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy (strict on the protocol cores) and the import-layer contracts."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("mypy", "meshcore", "ztunnel", "istiod_lite", "waypoint", "cni_plugin")
    session.run("lint-imports")


@nox.session
def protos(session: nox.Session) -> None:
    """Regenerate meshcore/protos from protos/*.proto (the output is committed)."""
    session.install("-e", ".[protos]")
    with tempfile.TemporaryDirectory() as tmp:
        session.run("python", "scripts/gen_protos.py", tmp)
        shutil.rmtree(GENERATED_DIR, ignore_errors=True)
        shutil.copytree(tmp, GENERATED_DIR)
    session.log(f"regenerated {GENERATED_DIR.relative_to(ROOT)}")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against direct TCP and an Envoy HBONE pair, measured in the same run."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)
