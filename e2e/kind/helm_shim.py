"""Real Helm without a helm binary: Helm's Go code through the C shim of the helm-sdkpy wheel.

Used by the chart tests when `AMBIENT_PY_HELM_LIB` names `libhelm_sdkpy.so` (from the
helm-sdkpy 0.1.32 wheel; the package itself needs Python 3.12, the library loads with ctypes).
Run as a subprocess (`python -m e2e.kind.helm_shim ...`) because Go reads the environment
(`HELM_DRIVER=memory`: keep the release in memory, not in a Secret) once, when loaded.

* `lint CHART` prints Helm's lint report (JSON).
* `install CHART --kubeconfig K --values JSON` runs `helm install` against the API in K (the
  tests point it at kmock) and prints the release's rendered manifest.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys


def _lib(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
    return lib


def _config(lib: ctypes.CDLL, namespace: str, kubeconfig: str) -> ctypes.c_ulonglong:
    handle = ctypes.c_ulonglong()
    rc = lib.helm_sdkpy_config_create(namespace.encode(), kubeconfig.encode(), b"", b"{}",
                                      ctypes.byref(handle))
    if rc:
        raise SystemExit(f"helm config: {lib.helm_sdkpy_last_error()!r}")
    return handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.kind.helm_shim")
    parser.add_argument("action", choices=["lint", "install"])
    parser.add_argument("chart")
    parser.add_argument("--lib", default=os.environ.get("AMBIENT_PY_HELM_LIB", ""))
    parser.add_argument("--kubeconfig", default="")
    parser.add_argument("--namespace", default="ambient-py")
    parser.add_argument("--release", default="ambient-py")
    parser.add_argument("--values", default="{}")
    args = parser.parse_args(argv)
    lib = _lib(args.lib)
    handle = _config(lib, args.namespace, args.kubeconfig)
    out = ctypes.c_char_p()
    if args.action == "lint":
        rc = lib.helm_sdkpy_lint(handle, args.chart.encode(), ctypes.byref(out))
    else:
        options = {"create_namespace": False, "wait": False, "timeout_seconds": 30,
                   "disable_openapi_validation": True, "skip_schema_validation": True}
        rc = lib.helm_sdkpy_install(handle, args.release.encode(), args.chart.encode(),
                                    args.values.encode(), b"", json.dumps(options).encode(),
                                    ctypes.byref(out))
    if rc:
        raise SystemExit(f"helm {args.action}: {lib.helm_sdkpy_last_error()!r}")
    result = json.loads(out.value or b"{}")
    json.dump(result if args.action == "lint" else {"manifest": result["manifest"]}, sys.stdout)


if __name__ == "__main__":
    main()
