"""The plugin executable stays light: no pyroute2, trio, grpclib or betterproto on import."""

from __future__ import annotations

import subprocess
import sys


def test_plugin_imports_no_heavy_packages() -> None:
    """Importing the plugin entry point loads none of the agent-side libraries."""
    probe = ("import sys, cni_plugin.__main__; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'pyroute2', 'trio', 'grpclib', 'betterproto', 'asyncio', 'meshcore'}))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"
