"""`ambient-cni install`: runtime + launcher on the host, our entry chained into the primary
CNI config, idempotence, and an uninstall that removes exactly what install added."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni_plugin import install as inst

SOCKET = "/var/run/ambient-py/cni-agent.sock"
BRIDGE_CONFLIST = {
    "cniVersion": "1.0.0", "name": "kindnet",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
BRIDGE_CONF = {"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0",
               "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}}


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc, indent=4))
    return path


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    return bin_dir, conf_dir


@pytest.mark.parametrize(("names", "expected"), [
    pytest.param(["10-kindnet.conflist", "99-loopback.conf"], "10-kindnet.conflist",
                 id="first-wins"),
    pytest.param(["20-b.conflist", "10-a.conf", "notes.txt", "00-x.json"], "10-a.conf",
                 id="conf-and-conflist-only"),
    pytest.param(["README"], None, id="none"),
])
def test_primary_config_is_lexicographically_first(tmp_path, names, expected):
    """The primary config is the first *.conf/*.conflist by name, as libcni picks it."""
    for n in names:
        (tmp_path / n).write_text("{}")
    found = inst.primary_config(tmp_path)
    assert (found.name if found else None) == expected


def test_chains_last_and_keeps_other_plugins(dirs):
    """Our entry goes last in the primary conflist; the other plugins are unchanged."""
    _, conf_dir = dirs
    path = write(conf_dir / "10-kindnet.conflist", BRIDGE_CONFLIST)
    assert inst.chain_plugin(conf_dir, SOCKET) == path
    doc = json.loads(path.read_text())
    assert doc["plugins"][:2] == BRIDGE_CONFLIST["plugins"]
    assert doc["plugins"][2] == {"type": "ambient-cni", "agentSocket": SOCKET}
    assert sorted(p.name for p in conf_dir.iterdir()) == ["10-kindnet.conflist"]


def test_second_install_writes_nothing(dirs):
    """Install is idempotent: the second run leaves the file (same inode) as it was."""
    _, conf_dir = dirs
    path = write(conf_dir / "10-kindnet.conflist", BRIDGE_CONFLIST)
    inst.chain_plugin(conf_dir, SOCKET)
    before = (path.stat().st_ino, path.read_text())
    inst.chain_plugin(conf_dir, SOCKET)
    assert (path.stat().st_ino, path.read_text()) == before


def test_an_older_entry_of_ours_is_replaced_and_moved_last(dirs):
    """A stale entry (other socket, not last) is replaced by one entry, last."""
    _, conf_dir = dirs
    stale = {**BRIDGE_CONFLIST, "plugins": [BRIDGE_CONFLIST["plugins"][0],
                                            {"type": "ambient-cni", "agentSocket": "/old"},
                                            BRIDGE_CONFLIST["plugins"][1]]}
    path = write(conf_dir / "10-kindnet.conflist", stale)
    inst.chain_plugin(conf_dir, SOCKET)
    types = [p["type"] for p in json.loads(path.read_text())["plugins"]]
    assert types == ["bridge", "portmap", "ambient-cni"]


def test_uninstall_restores_the_conflist(dirs):
    """Uninstall leaves the conflist with exactly the original plugins."""
    bin_dir, conf_dir = dirs
    path = write(conf_dir / "10-kindnet.conflist", BRIDGE_CONFLIST)
    inst.chain_plugin(conf_dir, SOCKET)
    inst.uninstall(bin_dir, conf_dir)
    assert json.loads(path.read_text()) == BRIDGE_CONFLIST


def test_conf_is_converted_and_restored(dirs):
    """A single .conf becomes a conflist (plugin 0 = the conf); uninstall brings the .conf back."""
    bin_dir, conf_dir = dirs
    write(conf_dir / "10-mynet.conf", BRIDGE_CONF)
    target = inst.chain_plugin(conf_dir, SOCKET)
    assert target.name == "10-mynet.conflist"
    assert sorted(p.name for p in conf_dir.iterdir()) == ["10-mynet.conflist"]
    doc = json.loads(target.read_text())
    assert (doc["cniVersion"], doc["name"]) == ("0.4.0", "mynet")
    assert doc["plugins"][0] == BRIDGE_CONF
    assert doc["plugins"][1]["type"] == "ambient-cni"
    inst.chain_plugin(conf_dir, SOCKET)  # idempotent: the conversion record survives
    inst.uninstall(bin_dir, conf_dir)
    assert sorted(p.name for p in conf_dir.iterdir()) == ["10-mynet.conf"]
    assert json.loads((conf_dir / "10-mynet.conf").read_text()) == BRIDGE_CONF


def test_no_primary_config_is_an_error_naming_the_dir(dirs):
    """Without a primary CNI config there is nothing to chain into: a clear error."""
    _, conf_dir = dirs
    with pytest.raises(inst.InstallError, match="primary CNI plugin has not been installed"):
        inst.chain_plugin(conf_dir, SOCKET)


def test_uninstall_leaves_a_foreign_launcher(dirs):
    """A file named ambient-cni that we did not write is not removed."""
    bin_dir, conf_dir = dirs
    (bin_dir / "ambient-cni").write_text("#!/bin/sh\necho someone else\n")
    inst.uninstall(bin_dir, conf_dir)
    assert (bin_dir / "ambient-cni").exists()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One real install (this interpreter's runtime copied) shared by the runtime tests."""
    root = tmp_path_factory.mktemp("host")
    bin_dir, conf_dir, runtime = root / "opt/cni/bin", root / "etc/cni/net.d", root / "opt/rt"
    conf_dir.mkdir(parents=True)
    write(conf_dir / "10-kindnet.conflist", BRIDGE_CONFLIST)
    inst.install(inst.InstallOptions(bin_dir, conf_dir, SOCKET, runtime, str(runtime)))
    return bin_dir, conf_dir, runtime


def test_launcher_runs_the_plugin_from_the_copied_runtime(installed):
    """The launcher answers CNI VERSION using only the copied runtime (clean environment)."""
    bin_dir, _, runtime = installed
    launcher = bin_dir / "ambient-cni"
    assert os.access(launcher, os.X_OK)
    [rt] = [p.name for p in runtime.iterdir() if p.name.startswith("runtime-")]
    assert f"{runtime}/{rt}" in launcher.read_text()
    out = subprocess.run([str(launcher)], env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin"},
                         input=b"", capture_output=True, timeout=30, check=True)
    assert "1.0.0" in json.loads(out.stdout)["supportedVersions"]


def test_reinstall_keeps_the_runtime_and_uninstall_removes_everything(installed):
    """A second install copies nothing new; uninstall removes launcher, entry and runtime."""
    bin_dir, conf_dir, runtime = installed
    before = sorted(p.name for p in runtime.iterdir())
    inst.install(inst.InstallOptions(bin_dir, conf_dir, SOCKET, runtime, str(runtime)))
    assert sorted(p.name for p in runtime.iterdir()) == before
    inst.uninstall(bin_dir, conf_dir, runtime)
    assert not (bin_dir / "ambient-cni").exists()
    assert list(runtime.iterdir()) == []
    assert json.loads((conf_dir / "10-kindnet.conflist").read_text()) == BRIDGE_CONFLIST


def test_cli_install_and_uninstall(dirs):
    """`ambient-cni install` / `--uninstall` through the console entry (python -m cni_plugin)."""
    bin_dir, conf_dir = dirs
    path = write(conf_dir / "10-kindnet.conflist", BRIDGE_CONFLIST)
    base = [sys.executable, "-m", "cni_plugin", "install", "--cni-bin-dir", str(bin_dir),
            "--cni-conf-dir", str(conf_dir), "--agent-socket", SOCKET]
    subprocess.run(base, check=True, capture_output=True, timeout=30)
    assert json.loads(path.read_text())["plugins"][-1]["type"] == "ambient-cni"
    subprocess.run([*base, "--uninstall"], check=True, capture_output=True, timeout=30)
    assert json.loads(path.read_text()) == BRIDGE_CONFLIST
    empty = conf_dir.parent / "empty"
    empty.mkdir()
    failed = subprocess.run([*base[:-3], str(empty), "--agent-socket", SOCKET],
                            capture_output=True, timeout=30)
    assert failed.returncode == 1 and b"has not been installed" in failed.stderr


def test_agent_uninstalls_on_exit(dirs, tmp_path):
    """`ambient-cni agent --uninstall-on-exit` removes the chained entry when it is stopped."""
    import signal

    bin_dir, conf_dir = dirs
    path = write(conf_dir / "10-kindnet.conflist", BRIDGE_CONFLIST)
    inst.chain_plugin(conf_dir, SOCKET)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    agent = subprocess.Popen(
        [sys.executable, "-m", "cni_plugin", "agent", "--manifests", str(manifests),
         "--node", "n1", "--no-zds", "--agent-socket", str(tmp_path / "agent.sock"),
         "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(conf_dir),
         "--uninstall-on-exit"], stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stderr is not None
        for line in agent.stderr:  # blocks until the agent reports its plugin socket
            if "plugin socket:" in line:
                break
        assert json.loads(path.read_text())["plugins"][-1]["type"] == "ambient-cni"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait()
    assert json.loads(path.read_text()) == BRIDGE_CONFLIST


def test_operator_commands_parse_with_our_clis():
    """The operator's init-container and agent command lines are accepted by our parsers."""
    from cni_plugin.agent.__main__ import build_parser as agent_parser
    from istiod_lite.operator import components

    install_cmd = components.cni_install_command()
    args = inst.build_parser().parse_args(install_cmd[2:])
    assert (str(args.host_runtime_dir), args.host_runtime_path) == \
        (components.CNI_RUNTIME_MOUNT, components.CNI_HOST_RUNTIME_DIR)
    agent_cmd = components.cni_agent_command(namespace="istio-system", log_level="info")
    args = agent_parser().parse_args(agent_cmd[2:])
    assert args.uninstall_on_exit and args.health_port == components.CNI_HEALTH_PORT
    assert args.manifests is None  # → the Kubernetes source
