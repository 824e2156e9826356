"""Names, ports, labels and container command lines of every component the operator deploys.

The ONE place where the operator (and the Helm chart's tests and the kind suite) learn how each
process is started: `reconcile.py` and `waypoints.py` call the `*_command()` builders; nothing
else spells a flag. When a component's CLI changes, change it here (docs/operator.md lists the
contract for each console script). Pure data and pure functions: no I/O.

Invariants: ports match REFERENCE.md §1/§6 (istiod 15012; ztunnel 15000/15020/15021; waypoint
15008/15020/15021); the ZDS socket lives in the host directory /var/run/ztunnel, shared by the
ztunnel and CNI-agent DaemonSets.
"""

from __future__ import annotations

GROUP = "ambient-py.io"
VERSION = "v1alpha1"
MESH_KIND = "Mesh"
MESH_PLURAL = "meshes"

# -- labels and annotations we own ---------------------------------------------------------
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ambient-py-operator"
MESH_LABEL = f"{GROUP}/mesh"  # name of the Mesh that owns an object
VERSION_LABEL = f"{GROUP}/version"  # component version a pod template runs
# Set on a ztunnel pod (by that ztunnel, through the API) once it has acknowledged the CNI
# agent's `SnapshotSent` on its current ZDS connection, i.e. it has re-received its node's pods.
# Value: the number of pods in that snapshot, as a decimal string. The rollout waits for it.
ZDS_SYNCED_ANNOTATION = f"{GROUP}/zds-synced"

# -- istiod_lite (control plane) -------------------------------------------------------------
ISTIOD_NAME = "istiod-lite"
ISTIOD_GRPC_PORT = 15012  # xDS (workload API) + CA, TLS
ROOT_CERT_DIR = "/var/run/secrets/istio"  # ztunnel's root-cert.pem, as Istio mounts it
ISTIOD_READY_PORT = 15021  # GET /ready
CA_SECRET_NAME = "istio-ca-secret"
CA_CERT_KEY = "ca-cert.pem"
CA_KEY_KEY = "ca-key.pem"
CA_MOUNT = "/etc/istiod-lite/ca"
# The root certificate published into user namespaces (as Istio does): ConfigMap name and key.
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"

# -- ztunnel -------------------------------------------------------------------------------------
ZTUNNEL_NAME = "ztunnel"
ZTUNNEL_ADMIN_PORT = 15000
ZTUNNEL_METRICS_PORT = 15020
ZTUNNEL_READY_PORT = 15021
ZDS_HOST_DIR = "/var/run/ztunnel"
ZDS_SOCKET = f"{ZDS_HOST_DIR}/ztunnel.sock"
TOKEN_DIR = "/var/run/secrets/tokens"
TOKEN_FILE = f"{TOKEN_DIR}/istio-token"
TOKEN_AUDIENCE = "istio-ca"
TOKEN_SECONDS = 43200
ZTUNNEL_CAPABILITIES = ("NET_ADMIN", "SYS_ADMIN", "NET_RAW")

# -- CNI node agent ------------------------------------------------------------------------------
CNI_NAME = "ambient-cni"
CNI_RUN_DIR = "/var/run/ambient-py"
CNI_AGENT_SOCKET = f"{CNI_RUN_DIR}/cni-agent.sock"
CNI_HEALTH_PORT = 8000  # GET /readyz
CNI_HOST_BIN_DIR = "/opt/cni/bin"
CNI_HOST_CONF_DIR = "/etc/cni/net.d"
CNI_BIN_MOUNT = "/host/opt/cni/bin"
CNI_CONF_MOUNT = "/host/etc/cni/net.d"
CNI_CAPABILITIES = ("NET_ADMIN", "SYS_ADMIN", "NET_RAW", "SYS_PTRACE")
# The container runtime runs the plugin on the host, where there may be no Python: the
# installer copies a self-contained runtime (interpreter + packages) here and puts a launcher
# named `ambient-cni` into the CNI bin dir that executes it.
CNI_HOST_RUNTIME_DIR = "/opt/ambient-py"
CNI_RUNTIME_MOUNT = "/host/opt/ambient-py"

# -- waypoints -----------------------------------------------------------------------------------
WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_CONTROLLER = "istio.io/mesh-controller"
WAYPOINT_HBONE_PORT = 15008
WAYPOINT_STATUS_PORT = 15021
WAYPOINT_METRICS_PORT = 15020
WAYPOINT_UID = 1337


def istiod_address(namespace: str) -> str:
    """Where ztunnels and waypoints reach the control plane (xDS and CA)."""
    return f"{ISTIOD_NAME}.{namespace}.svc:{ISTIOD_GRPC_PORT}"


def istiod_command(*, namespace: str, trust_domain: str, log_level: str) -> list[str]:
    """`istiod-lite`: Kubernetes config source, xDS + CA on 15012, CA root from the Secret."""
    return ["istiod-lite",
            "--kubernetes",
            "--root-namespace", namespace,
            "--trust-domain", trust_domain,
            "--listen", f"0.0.0.0:{ISTIOD_GRPC_PORT}",
            "--dns-name", f"{ISTIOD_NAME}.{namespace}.svc",
            "--ready", f"0.0.0.0:{ISTIOD_READY_PORT}",
            "--ca-cert", f"{CA_MOUNT}/{CA_CERT_KEY}",
            "--ca-key", f"{CA_MOUNT}/{CA_KEY_KEY}",
            "--log-level", log_level]


def ztunnel_command(*, namespace: str, trust_domain: str, log_level: str) -> list[str]:
    """`ztunnel`: xDS + CA at istiod, ZDS server on the host socket, admin/metrics/readiness."""
    return ["ztunnel",
            "--xds-address", istiod_address(namespace),
            "--ca-address", istiod_address(namespace),
            "--trust-domain", trust_domain,
            "--token-file", TOKEN_FILE,
            "--root-cert", f"{ROOT_CERT_DIR}/{ROOT_CERT_KEY}",
            "--istiod-server-name", f"{ISTIOD_NAME}.{namespace}.svc",
            "--zds-socket", ZDS_SOCKET,
            "--admin", f"127.0.0.1:{ZTUNNEL_ADMIN_PORT}",
            "--metrics", f"0.0.0.0:{ZTUNNEL_METRICS_PORT}",
            "--readiness", f"0.0.0.0:{ZTUNNEL_READY_PORT}",
            "--log-level", log_level]


def cni_install_command() -> list[str]:
    """Init container: copy the plugin into the host bin dir, chain it into the host conflist."""
    return ["ambient-cni", "install",
            "--cni-bin-dir", CNI_BIN_MOUNT,
            "--cni-conf-dir", CNI_CONF_MOUNT,
            "--host-runtime-dir", CNI_RUNTIME_MOUNT,
            "--host-runtime-path", CNI_HOST_RUNTIME_DIR,
            "--agent-socket", CNI_AGENT_SOCKET]


def cni_agent_command(*, namespace: str, log_level: str) -> list[str]:
    """`ambient-cni agent`: plugin socket, ZDS client, pod watch; uninstalls the plugin on exit."""
    return ["ambient-cni", "agent",
            "--agent-socket", CNI_AGENT_SOCKET,
            "--zds-socket", ZDS_SOCKET,
            "--system-namespace", namespace,
            "--cni-bin-dir", CNI_BIN_MOUNT,
            "--cni-conf-dir", CNI_CONF_MOUNT,
            "--uninstall-on-exit",
            "--health-port", str(CNI_HEALTH_PORT),
            "--log-level", log_level]


def waypoint_command(*, gateway: str, system_namespace: str, trust_domain: str) -> list[str]:
    """`waypoint`: HBONE on 15008, readiness 15021, metrics 15020; identity = its own SA."""
    return ["waypoint",
            "--name", gateway,
            "--namespace", "$(POD_NAMESPACE)",
            "--xds-address", istiod_address(system_namespace),
            "--ca-address", istiod_address(system_namespace),
            "--trust-domain", trust_domain,
            "--token-file", TOKEN_FILE,
            "--root-cert", f"{ROOT_CERT_DIR}/{ROOT_CERT_KEY}",
            "--istiod-server-name", f"{ISTIOD_NAME}.{system_namespace}.svc",
            "--listen", f"0.0.0.0:{WAYPOINT_HBONE_PORT}",
            "--readiness", f"0.0.0.0:{WAYPOINT_STATUS_PORT}",
            "--metrics", f"0.0.0.0:{WAYPOINT_METRICS_PORT}"]


def operator_command() -> list[str]:
    """The operator itself (the Helm chart's Deployment)."""
    return ["python", "-m", "istiod_lite.operator"]
