"""Test helper: execute CNI plugins the way a runtime does (libcni semantics, no Go needed).

`exec_plugin` runs one plugin binary with CNI_* in the environment and the config on stdin,
optionally with the plugin process placed in a given netns (where e.g. `bridge` creates the
host-side bridge). `add_list`/`check_list`/`del_list` walk a conflist like libcni: each plugin's
config gets the list's `name` and `cniVersion`; ADD feeds each result as the next `prevResult`;
CHECK and DEL get the cached ADD result as `prevResult`; DEL runs the list in reverse order.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

CLONE_NEWNET = 0x40000000
PLUGIN_DIRS = ("/usr/lib/cni", os.path.dirname(shutil.which("ambient-cni") or
                                               "/work/venv/bin/ambient-cni"))


@dataclass
class PluginFailure(Exception):
    plugin: str
    returncode: int
    error: dict[str, Any]


def _enter(netns_path: str | None):  # type: ignore[no-untyped-def]
    if netns_path is None:
        return None

    def preexec() -> None:
        fd = os.open(netns_path, os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    return preexec


def find_plugin(type_name: str) -> str:
    for directory in PLUGIN_DIRS:
        path = os.path.join(directory, type_name)
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"CNI plugin {type_name!r} not found in {PLUGIN_DIRS}")


def exec_plugin(command: str, conf: dict[str, Any], *, container_id: str, netns: str,
                ifname: str = "eth0", cni_args: str = "",
                process_netns: str | None = None) -> dict[str, Any] | None:
    """Run one plugin; returns its parsed stdout (None if empty) or raises PluginFailure."""
    env = {
        "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
        "CNI_IFNAME": ifname, "CNI_ARGS": cni_args, "CNI_PATH": os.pathsep.join(PLUGIN_DIRS),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    proc = subprocess.run([find_plugin(conf["type"])], input=json.dumps(conf).encode(),
                          env=env, capture_output=True, timeout=30,
                          preexec_fn=_enter(process_netns))
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    if proc.returncode != 0:
        raise PluginFailure(conf["type"], proc.returncode, out or {"stderr": proc.stderr})
    return out


def _plugin_conf(conflist: dict[str, Any], plugin: dict[str, Any],
                 prev: dict[str, Any] | None) -> dict[str, Any]:
    conf = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def add_list(conflist: dict[str, Any], **kw: Any) -> list[dict[str, Any] | None]:
    """ADD through the list; returns every plugin's result in order (the last is the list's)."""
    results: list[dict[str, Any] | None] = []
    result = None
    for plugin in conflist["plugins"]:
        result = exec_plugin("ADD", _plugin_conf(conflist, plugin, result), **kw)
        results.append(result)
    return results


def check_list(conflist: dict[str, Any], cached: dict[str, Any] | None, **kw: Any) -> None:
    for plugin in conflist["plugins"]:
        exec_plugin("CHECK", _plugin_conf(conflist, plugin, cached), **kw)


def del_list(conflist: dict[str, Any], cached: dict[str, Any] | None, **kw: Any) -> None:
    for plugin in reversed(conflist["plugins"]):
        exec_plugin("DEL", _plugin_conf(conflist, plugin, cached), **kw)
