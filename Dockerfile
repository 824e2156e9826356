# One image, every component: istiod-lite, ztunnel, waypoint, ambient-cni (plugin + agent),
# ambientctl and the operator (`python -m istiod_lite.operator`). The Mesh's pod specs pick
# the entry point with `command:` (istiod_lite/operator/components.py).
#
#   docker build -t ambient-py/ambient-py:0.1.0 .
#
# The CNI plugin is installed onto each node by `ambient-cni install`, which writes a small
# launcher for the host's runtime (see docs/kind-e2e.md): the runtime calls it outside the
# container, so the node needs this image's Python environment, mounted from the agent pod.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshcore ./meshcore
COPY istiod_lite ./istiod_lite
COPY ztunnel ./ztunnel
COPY waypoint ./waypoint
COPY cni_plugin ./cni_plugin
COPY ambientctl ./ambientctl
RUN python -m venv /opt/ambient-py \
 && /opt/ambient-py/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/ambient-py /opt/ambient-py
ENV PATH=/opt/ambient-py/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# uid 1337 is the proxy user of Istio (waypoints, istiod); node components run as root.
RUN useradd --uid 1337 --user-group --no-create-home --shell /usr/sbin/nologin istio-proxy
USER 1337
ENTRYPOINT []
CMD ["istiod-lite", "--help"]
