#!/usr/bin/env bash
# Runs the kind e2e suite: needs docker (with a running daemon), kind, kubectl and helm.
# Usage: e2e/kind/run.sh [pytest args]   (KEEP_CLUSTER=1 keeps the cluster afterwards)
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (see docs/kind-e2e.md)" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "docker daemon not reachable" >&2; exit 2; }
exec python -m pytest e2e/kind -v -p no:cacheprovider "$@"
