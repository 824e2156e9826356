"""Workarounds for the kmock 0.8 Kubernetes emulator, in one place for every kmock test.

kmock 0.8 cannot address `/api/v1/namespaces[/<name>]`: its path parser reads the segment as a
namespace. `fix_namespaces_path(monkeypatch)` teaches it the cluster-scoped Namespace kind.
"""

from __future__ import annotations

import pytest
from kmock._internal import parsing


def fix_namespaces_path(monkeypatch: pytest.MonkeyPatch) -> None:
    original = parsing.parse_path

    def parse_path(path: str) -> parsing.ParsedPath:
        parts = path.strip("/").split("/")
        if len(parts) in (3, 4) and parts[0] == "api" and parts[2] == "namespaces":
            name = parts[3] if len(parts) == 4 else None
            return parsing.ParsedPath("", parts[1], "namespaces", None, name, None)
        return original(path)

    monkeypatch.setattr(parsing, "parse_path", parse_path)
