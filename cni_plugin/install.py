"""`ambient-cni install`: put the plugin on the node and chain it into the primary CNI config.

Called by `cni_plugin.__main__` (the DaemonSet's init container runs `ambient-cni install`;
`--uninstall` undoes it) and by the node agent on exit (`--uninstall-on-exit`, `uninstall`).

What install does, each step idempotent (a second run changes nothing):
1. Runtime (`install_runtime`): the host may have no Python, so the running interpreter (its
   binary, libpython, the standard library minus tests/tk/idle/ensurepip/site-packages) and the
   `cni_plugin` package (the plugin imports nothing else: tests/cni_plugin/
   test_plugin_footprint.py) are copied to `<host-runtime-dir>/runtime-<digest>/`; the digest
   covers the interpreter version and every copied package file, so an unchanged runtime is
   never copied again and a new one never overwrites the one in use.
2. Launcher (`write_launcher`): `<cni-bin-dir>/ambient-cni`, a POSIX sh script that execs
   `<host-runtime-path>/runtime-<digest>/python/bin/python3.X -m cni_plugin` (host paths);
   written atomically (temp file + rename), then older `runtime-*` dirs are removed.
3. Chain (`chain_plugin`): the primary config of `<cni-conf-dir>` is the lexicographically first
   `*.conflist` / `*.conf` (what libcni picks). Our entry `{"type": "ambient-cni",
   "agentSocket": ...}` is placed last in its `plugins` (an older entry of ours is replaced).
   A single-plugin `.conf` is converted into `<name>.conflist` as Istio does (the `.conf` is
   removed); our entry then records `"ambientPyConvertedFrom": "<name>.conf"` so uninstall can
   restore it. Written atomically; nothing is written when the file already says it.
Uninstall removes exactly that: our entries (restoring a converted `.conf`), the launcher (only
if it is ours) and, when given the runtime dir, the `runtime-*` dirs.

Errors: `InstallError` (no primary config yet, unreadable JSON) names the file and the fix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni_plugin.errors import CniPluginError

PLUGIN_TYPE = "ambient-cni"
CONVERTED_KEY = "ambientPyConvertedFrom"
LAUNCHER_MARK = "# ambient-cni launcher, written by `ambient-cni install`"
_STDLIB_SKIP = frozenset({"site-packages", "test", "idlelib", "tkinter", "turtledemo",
                          "ensurepip", "lib2to3", "__pycache__"})


class InstallError(CniPluginError):
    """The plugin could not be installed (or uninstalled) on this node."""


@dataclass(frozen=True)
class InstallOptions:
    cni_bin_dir: Path
    cni_conf_dir: Path
    agent_socket: str
    host_runtime_dir: Path | None = None  # where we write the runtime (a mount of ...)
    host_runtime_path: str | None = None  # ... this host path, as the launcher names it


@dataclass(frozen=True)
class RuntimeSource:
    """What gets copied to the host: an interpreter installation and the plugin package."""

    prefix: Path  # sys.base_prefix: bin/python3.X, lib/python3.X, lib/libpython3.X.so*
    version: str  # "3.11"
    package: Path  # the cni_plugin package directory

    @classmethod
    def current(cls) -> RuntimeSource:
        import cni_plugin

        return cls(Path(sys.base_prefix), sysconfig.get_python_version(),
                   Path(cni_plugin.__file__).parent)


# -- runtime and launcher ---------------------------------------------------------------------
def _package_files(package: Path) -> Iterator[Path]:
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def runtime_digest(source: RuntimeSource) -> str:
    """A digest of the interpreter version and the package's files (names and contents)."""
    h = hashlib.sha256(f"python {source.version} {source.prefix}\n".encode())
    for path in _package_files(source.package):
        h.update(str(path.relative_to(source.package)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _copy_stdlib(src: Path, dst: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in _STDLIB_SKIP or n.startswith("config-")}
        return skip if Path(directory) == src else skip & {"__pycache__"}

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def install_runtime(runtime_dir: Path, source: RuntimeSource | None = None) -> str:
    """Copy the runtime into `runtime_dir/runtime-<digest>` unless there; returns the dir name."""
    source = source or RuntimeSource.current()
    name = f"runtime-{runtime_digest(source)}"
    final = runtime_dir / name
    if (final / ".complete").exists():
        return name
    staging = runtime_dir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    python = staging / "python"
    (python / "bin").mkdir(parents=True)
    shutil.copy2(source.prefix / "bin" / f"python{source.version}",
                 python / "bin" / f"python{source.version}")
    lib = python / "lib"
    _copy_stdlib(source.prefix / "lib" / f"python{source.version}",
                 lib / f"python{source.version}")
    for so in sorted((source.prefix / "lib").glob(f"libpython{source.version}*.so*")):
        shutil.copy2(so, lib / so.name, follow_symlinks=False)
    shutil.copytree(source.package, staging / "lib" / "cni_plugin",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (staging / ".complete").write_text(name + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return name


def launcher_text(runtime_path: str, version: str) -> str:
    """The launcher script for a runtime at host path `runtime_path` (…/runtime-<digest>)."""
    return (f"#!/bin/sh\n{LAUNCHER_MARK}; removed by `--uninstall`.\n"
            f"R='{runtime_path}'\n"
            'PYTHONHOME="$R/python" PYTHONPATH="$R/lib" LD_LIBRARY_PATH="$R/python/lib" '
            f'PYTHONDONTWRITEBYTECODE=1 exec "$R/python/bin/python{version}" -s -m cni_plugin '
            '"$@"\n')


def write_launcher(bin_dir: Path, text: str) -> bool:
    """Write `<bin_dir>/ambient-cni` atomically (mode 0755); False when already identical."""
    path = bin_dir / PLUGIN_TYPE
    if path.exists() and path.read_text(errors="replace") == text:
        return False
    _atomic_write(path, text, mode=0o755)
    return True


def remove_launcher(bin_dir: Path) -> bool:
    path = bin_dir / PLUGIN_TYPE
    try:
        ours = LAUNCHER_MARK in path.read_text(errors="replace")
    except FileNotFoundError:
        return False
    if ours:
        path.unlink()
    return ours


def remove_runtimes(runtime_dir: Path, keep: str | None = None) -> list[str]:
    removed = []
    for d in sorted(runtime_dir.glob("runtime-*")) + sorted(runtime_dir.glob(".runtime-*")):
        if d.name != keep and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


# -- the conflist ---------------------------------------------------------------------------
def primary_config(conf_dir: Path) -> Path | None:
    """The file libcni would use: the lexicographically first `*.conf` / `*.conflist`."""
    names = sorted(p.name for p in conf_dir.iterdir()
                   if p.suffix in (".conf", ".conflist") and p.is_file())
    return conf_dir / names[0] if names else None


def our_entry(agent_socket: str, converted_from: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": PLUGIN_TYPE, "agentSocket": agent_socket}
    if converted_from:
        entry[CONVERTED_KEY] = converted_from
    return entry


def chained(conflist: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """`conflist` with our entry last (pure; other plugins untouched)."""
    plugins = [p for p in conflist.get("plugins") or [] if p.get("type") != PLUGIN_TYPE]
    return {**conflist, "plugins": [*plugins, entry]}


def unchained(conflist: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """`conflist` without our entries, and the `.conf` name it was converted from (if any)."""
    ours = [p for p in conflist.get("plugins") or [] if p.get("type") == PLUGIN_TYPE]
    converted = next((p[CONVERTED_KEY] for p in ours if p.get(CONVERTED_KEY)), None)
    rest = [p for p in conflist.get("plugins") or [] if p.get("type") != PLUGIN_TYPE]
    return {**conflist, "plugins": rest}, converted


def conf_to_conflist(conf: dict[str, Any]) -> dict[str, Any]:
    """A single-plugin `.conf` as a conflist (Istio's conversion: the conf becomes plugin 0)."""
    return {"cniVersion": conf.get("cniVersion", "1.0.0"),
            "name": conf.get("name", "k8s-pod-network"), "plugins": [conf]}


def chain_plugin(conf_dir: Path, agent_socket: str) -> Path:
    """Chain our plugin into the primary config; returns the conflist path."""
    primary = primary_config(conf_dir)
    if primary is None:
        raise InstallError(f"no CNI network config (*.conf, *.conflist) in {conf_dir} yet: the "
                           "primary CNI plugin has not been installed on this node; this "
                           "container restarts until it is")
    doc = _read_json(primary)
    converted = None
    if primary.suffix == ".conf":
        converted = primary.name
        target = primary.with_suffix(".conflist")
        doc = conf_to_conflist(doc)
    else:
        target = primary
        previous = next((p for p in doc.get("plugins") or []
                         if p.get("type") == PLUGIN_TYPE and p.get(CONVERTED_KEY)), None)
        converted = previous[CONVERTED_KEY] if previous else None
    new = chained(doc, our_entry(agent_socket, converted))
    if new != doc or target != primary:
        _atomic_write(target, json.dumps(new, indent=2) + "\n")
    if target != primary:
        primary.unlink()
    return target


def unchain_plugin(conf_dir: Path) -> list[Path]:
    """Remove our entries from every config in `conf_dir`; restore converted `.conf` files."""
    changed = []
    for path in sorted(conf_dir.glob("*.conflist")):
        try:
            doc = _read_json(path)
        except InstallError:
            continue  # not ours to judge
        rest, converted = unchained(doc)
        if rest == doc:
            continue
        if converted and len(rest["plugins"]) == 1:
            _atomic_write(conf_dir / converted, json.dumps(rest["plugins"][0], indent=2) + "\n")
            path.unlink()
        else:
            _atomic_write(path, json.dumps(rest, indent=2) + "\n")
        changed.append(path)
    return changed


# -- entry points ---------------------------------------------------------------------------
def install(options: InstallOptions, source: RuntimeSource | None = None) -> Path:
    """Runtime (if a runtime dir is given), launcher, chain; returns the conflist path."""
    options.cni_bin_dir.mkdir(parents=True, exist_ok=True)
    if options.host_runtime_dir is not None:
        source = source or RuntimeSource.current()
        options.host_runtime_dir.mkdir(parents=True, exist_ok=True)
        name = install_runtime(options.host_runtime_dir, source)
        host_path = (options.host_runtime_path or str(options.host_runtime_dir)).rstrip("/")
        write_launcher(options.cni_bin_dir, launcher_text(f"{host_path}/{name}", source.version))
        remove_runtimes(options.host_runtime_dir, keep=name)
    return chain_plugin(options.cni_conf_dir, options.agent_socket)


def uninstall(cni_bin_dir: Path, cni_conf_dir: Path, host_runtime_dir: Path | None = None
              ) -> None:
    """Undo `install`: conflist entries first (no new pod calls a missing launcher)."""
    if cni_conf_dir.is_dir():
        unchain_plugin(cni_conf_dir)
    remove_launcher(cni_bin_dir)
    if host_runtime_dir is not None and host_runtime_dir.is_dir():
        remove_runtimes(host_runtime_dir)


def build_parser(prog: str = "ambient-cni install") -> argparse.ArgumentParser:
    from cni_plugin.agent_protocol import DEFAULT_AGENT_SOCKET

    parser = argparse.ArgumentParser(prog=prog, description="Copy the ambient-cni plugin onto "
                                     "the node and chain it into the primary CNI config.")
    parser.add_argument("--cni-bin-dir", type=Path, default=Path("/opt/cni/bin"))
    parser.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    parser.add_argument("--host-runtime-dir", type=Path, metavar="DIR",
                        help="where to copy the plugin's Python runtime (a host mount)")
    parser.add_argument("--host-runtime-path", metavar="PATH",
                        help="the host's path of --host-runtime-dir (what the launcher names)")
    parser.add_argument("--agent-socket", default=DEFAULT_AGENT_SOCKET)
    parser.add_argument("--uninstall", action="store_true",
                        help="remove what install added, and nothing else")
    return parser


def main(argv: list[str] | None = None, prog: str = "ambient-cni install") -> int:
    """`ambient-cni install [--uninstall] ...`; exit 0 on success, 1 with a message otherwise."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.uninstall:
            uninstall(args.cni_bin_dir, args.cni_conf_dir, args.host_runtime_dir)
            print(f"{prog}: removed the plugin from {args.cni_conf_dir} and {args.cni_bin_dir}")
        else:
            conflist = install(InstallOptions(args.cni_bin_dir, args.cni_conf_dir,
                                              args.agent_socket, args.host_runtime_dir,
                                              args.host_runtime_path))
            print(f"{prog}: chained {PLUGIN_TYPE} into {conflist}")
    except (InstallError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read CNI config {path}: {exc}; fix or remove the file") \
            from exc
    if not isinstance(doc, dict):
        raise InstallError(f"CNI config {path} is not a JSON object")
    return doc


def _atomic_write(path: Path, text: str, *, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.ambient-cni.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
