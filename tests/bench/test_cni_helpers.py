"""The CNI benchmark's pure helpers: summaries, -X importtime parsing, configs (no timings)."""

from __future__ import annotations

import json
import pathlib

import pytest

from bench import cni_section as cni
from meshcore.model.folder import scan_folder

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      2048 |       9000 |     cni_plugin.agent_protocol
import time:       812 |      21433 | cni_plugin.__main__
"""


def test_importtime_reads_the_cumulative_column() -> None:
    """The cumulative microseconds of the named module, as milliseconds."""
    assert cni.importtime_ms(IMPORTTIME, "cni_plugin.__main__") == pytest.approx(21.433)
    assert cni.importtime_ms(IMPORTTIME, "cni_plugin.agent_protocol") == pytest.approx(9.0)


def test_importtime_without_the_module_is_an_error() -> None:
    """A module that was not imported is reported, not read as zero."""
    with pytest.raises(ValueError, match=r"cni_plugin\.plugin"):
        cni.importtime_ms(IMPORTTIME, "cni_plugin.plugin")


def test_summarize_gives_median_and_p90_per_command() -> None:
    """Per command the median and the nearest-rank p90; commands never run are left out."""
    times = {"ADD": [float(v) for v in range(1, 11)], "DEL": [5.0, 7.0], "ADD again": []}
    assert cni.summarize(times) == {"add_p50": 5.5, "add_p90": 9.0, "del_p50": 6.0,
                                    "del_p90": 7.0}


def test_plugin_config_is_a_cni_1_0_config_with_prev_result() -> None:
    """The stdin config names the plugin type, the agent socket and the pod's IP."""
    conf = json.loads(cni.plugin_config("/run/a.sock", "/tmp/log", "10.77.0.2", "10.77.0.1"))
    assert (conf["type"], conf["cniVersion"], conf["agentSocket"]) == \
        ("ambient-cni", "1.0.0", "/run/a.sock")
    assert conf["prevResult"]["ips"][0]["address"] == "10.77.0.2/24"


def test_pod_manifest_lists_an_enrolled_pod_on_the_bench_node(tmp_path: pathlib.Path) -> None:
    """The agent's manifest parses cleanly: the pod is on NODE, enrolled, with the IP given."""
    (tmp_path / "pod.yaml").write_text(cni.pod_manifest("10.77.0.2"))
    state = scan_folder(str(tmp_path), None)
    assert state.diagnostics == ()
    (pod,) = state.model.pods_on_node(cni.NODE)
    assert (pod.namespace, pod.name) == (cni.POD_NS, cni.POD_NAME)
    assert state.model.is_enrolled(pod)


def test_unknown_case_is_refused() -> None:
    """Naming a case the section does not have fails before anything runs."""
    with pytest.raises(ValueError, match="unknown cases"):
        cni.run(["envoy"])
