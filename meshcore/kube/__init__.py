"""The shared Kubernetes API client (asyncio/aiohttp) and API paths; see `client.py`."""

from meshcore.kube.client import (
    MERGE_PATCH,
    KubeApiError,
    KubeClient,
    KubeError,
    KubeLoginError,
    login_from_environment,
)
from meshcore.kube.resources import BUILTIN_KINDS, Kind, api_path, contains

__all__ = ["BUILTIN_KINDS", "MERGE_PATCH", "Kind", "KubeApiError", "KubeClient", "KubeError",
           "KubeLoginError", "api_path", "contains", "login_from_environment"]
