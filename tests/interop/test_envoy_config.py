"""The bootstrap builders produce configs the real Envoy accepts (`--mode validate`)."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from tests.support.creds import TestPki
from tests.support.envoy import (
    EnvoyError,
    EnvoyProcess,
    envoy_binary,
    hbone_client_bootstrap,
    hbone_server_bootstrap,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("client", id="hbone client"),
        pytest.param("server-fixed", id="hbone server, fixed target"),
        pytest.param("server-authority", id="hbone server, target from :authority"),
    ],
)
def test_envoy_validates_bootstrap(kind: str, tmp_path: pathlib.Path, test_pki: TestPki) -> None:
    """Envoy 1.40 validates each bootstrap we generate, TLS files included."""
    tls = test_pki.issue(test_pki.identity("shop", "cart"))
    peer = test_pki.identity("shop", "inventory").uri
    if kind == "client":
        config = hbone_client_bootstrap(listen=("127.0.0.1", 15001), server=("127.0.0.1", 15008),
                                        authority="10.0.0.2:80", tls=tls, expected_server_id=peer)
    else:
        target = ("127.0.0.1", 9000) if kind == "server-fixed" else None
        config = hbone_server_bootstrap(listen=("127.0.0.1", 15008), tls=tls, target=target,
                                        allowed_client_ids=[peer])
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "--config-path", str(path),
         "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_config_fails_start_with_log(tmp_path: pathlib.Path) -> None:
    """An Envoy that exits while starting raises EnvoyError carrying its own log."""
    config = {"static_resources": {"listeners": [{"name": "no-address"}]}}
    proc = EnvoyProcess(config, tmp_path, name="broken")
    try:
        with pytest.raises(EnvoyError, match="exited with") as info:
            proc.start(timeout=30)
    finally:
        proc.stop()
    assert "broken.log" in str(info.value)
