"""Internal, frozen forms of the workload API's `Workload` and `Service` (istio.workload).

Called by `meshcore.wds.store` (the one updater) when a Delta xDS response carries
`type.googleapis.com/istio.workload.Address` resources. Each proto type crosses into these
types at exactly one gate, `<Type>.from_proto(msg, resource=name)`, which validates and raises
`ConversionError` naming the resource and field. Downstream code (outbound routing, the
authorization evaluator, the waypoint) reads only these types, never protos.

Invariants: every instance is immutable and hashable; IPs are `ipaddress` objects; a
Workload's identity is a `SpiffeId` (empty trust domain / service account mean
`cluster.local` / `default`, as in Istio); a GatewayAddress's port defaults to 15008; enums
are the proto's enums re-declared here so callers need not import generated code.
"""

from __future__ import annotations

import dataclasses
import enum

import betterproto

from meshcore.identity import InvalidIdentityError, SpiffeId
from meshcore.protos.istio import workload as pb
from meshcore.wds._gate import Err, enum_value, ip_from_bytes
from meshcore.wds._gate import IPAddress as IPAddress  # re-exported: the public IP type
from meshcore.wds.errors import ConversionError

HBONE_PORT = 15008


class TunnelProtocol(enum.IntEnum):
    NONE = 0
    HBONE = 1
    LEGACY_ISTIO_MTLS = 2


class WorkloadStatus(enum.IntEnum):
    HEALTHY = 0
    UNHEALTHY = 1


class WorkloadType(enum.IntEnum):
    DEPLOYMENT = 0
    CRONJOB = 1
    POD = 2
    JOB = 3


class AppProtocol(enum.IntEnum):
    UNKNOWN = 0
    HTTP11 = 1
    HTTP2 = 2
    GRPC = 3
    TCP = 4
    TLS = 5


class NetworkMode(enum.IntEnum):
    STANDARD = 0
    HOST_NETWORK = 1


class IpFamilies(enum.IntEnum):
    AUTOMATIC = 0
    IPV4_ONLY = 1
    IPV6_ONLY = 2
    DUAL = 3


class LoadBalancingScope(enum.IntEnum):
    UNSPECIFIED_SCOPE = 0
    REGION = 1
    ZONE = 2
    SUBZONE = 3
    NODE = 4
    CLUSTER = 5
    NETWORK = 6


class LoadBalancingMode(enum.IntEnum):
    UNSPECIFIED_MODE = 0
    STRICT = 1
    FAILOVER = 2
    PASSTHROUGH = 3


class HealthPolicy(enum.IntEnum):
    ONLY_HEALTHY = 0
    ALLOW_ALL = 1


class ApplicationTunnelProtocol(enum.IntEnum):
    NONE = 0
    PROXY = 1


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkAddress:
    network: str
    address: IPAddress


@dataclasses.dataclass(frozen=True, slots=True)
class NamespacedHostname:
    namespace: str
    hostname: str

    @property
    def key(self) -> str:
        """The service resource name this points at: `<namespace>/<hostname>`."""
        return f"{self.namespace}/{self.hostname}"


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayAddress:
    """A waypoint or network gateway: by service hostname (preferred) or by IP."""

    destination: NamespacedHostname | NetworkAddress
    hbone_mtls_port: int = HBONE_PORT


@dataclasses.dataclass(frozen=True, slots=True)
class Port:
    service_port: int
    target_port: int  # 0 = named port: resolve through Workload.services
    app_protocol: AppProtocol = AppProtocol.UNKNOWN


@dataclasses.dataclass(frozen=True, slots=True)
class ServicePorts:
    """One entry of `Workload.services`: the service it backs and its per-pod port map."""

    service: str  # "<namespace>/<hostname>"
    ports: tuple[Port, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ApplicationTunnel:
    protocol: ApplicationTunnelProtocol
    port: int


@dataclasses.dataclass(frozen=True, slots=True)
class LoadBalancing:
    routing_preference: tuple[LoadBalancingScope, ...] = ()
    mode: LoadBalancingMode = LoadBalancingMode.UNSPECIFIED_MODE
    health_policy: HealthPolicy = HealthPolicy.ONLY_HEALTHY


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """A pod (or other endpoint) as ztunnel sees it. Resource name = `uid`."""

    uid: str
    name: str
    namespace: str
    identity: SpiffeId
    addresses: tuple[IPAddress, ...] = ()
    hostname: str = ""
    network: str = ""
    tunnel_protocol: TunnelProtocol = TunnelProtocol.NONE
    waypoint: GatewayAddress | None = None
    network_gateway: GatewayAddress | None = None
    node: str = ""
    canonical_name: str = ""
    canonical_revision: str = ""
    workload_type: WorkloadType = WorkloadType.DEPLOYMENT
    workload_name: str = ""
    native_tunnel: bool = False
    application_tunnel: ApplicationTunnel | None = None
    services: tuple[ServicePorts, ...] = ()
    authorization_policies: tuple[str, ...] = ()  # "ns/name"; selector-scoped only
    status: WorkloadStatus = WorkloadStatus.HEALTHY
    cluster_id: str = ""
    locality: Locality = Locality()
    network_mode: NetworkMode = NetworkMode.STANDARD
    capacity: int = 1  # load-balancing weight

    def ports_for(self, service: str) -> tuple[Port, ...] | None:
        """The per-pod port map for service `ns/hostname`, or None if this pod does not back it."""
        for entry in self.services:
            if entry.service == service:
                return entry.ports
        return None

    @classmethod
    def from_proto(cls, msg: pb.Workload, *, resource: str = "") -> Workload:
        """The gate: validate an `istio.workload.Workload`; raise ConversionError naming a field."""
        name = resource or msg.uid
        err = Err("Workload", name)
        if not msg.uid:
            raise err("uid", "is empty")
        if not msg.namespace:
            raise err("namespace", "is empty")
        try:
            identity = SpiffeId.for_workload(msg.namespace, msg.service_account, msg.trust_domain)
        except InvalidIdentityError as e:
            raise err("service_account", f"does not form a SPIFFE identity: {e}") from e
        addresses = tuple(
            ip_from_bytes(a, err, f"addresses[{i}]") for i, a in enumerate(msg.addresses)
        )
        services = []
        for key in sorted(msg.services):
            if key.count("/") != 1 or key.startswith("/") or key.endswith("/"):
                raise err(f"services[{key!r}]", "key must be '<namespace>/<hostname>'")
            ports = tuple(
                _port(p, err, f"services[{key!r}].ports[{i}]")
                for i, p in enumerate(msg.services[key].ports)
            )
            services.append(ServicePorts(key, ports))
        app_tunnel = None
        if betterproto.serialized_on_wire(msg.application_tunnel):
            at = msg.application_tunnel
            app_tunnel = ApplicationTunnel(
                enum_value(
                    ApplicationTunnelProtocol, at.protocol, err, "application_tunnel.protocol"
                ),
                _port_number(at.port, err, "application_tunnel.port", allow_zero=True),
            )
        capacity = 1 if msg.capacity is None else int(msg.capacity)
        loc = msg.locality
        return cls(
            uid=msg.uid,
            name=msg.name,
            namespace=msg.namespace,
            identity=identity,
            addresses=addresses,
            hostname=msg.hostname,
            network=msg.network,
            tunnel_protocol=enum_value(TunnelProtocol, msg.tunnel_protocol, err, "tunnel_protocol"),
            waypoint=_gateway(msg.waypoint, err, "waypoint"),
            network_gateway=_gateway(msg.network_gateway, err, "network_gateway"),
            node=msg.node,
            canonical_name=msg.canonical_name,
            canonical_revision=msg.canonical_revision,
            workload_type=enum_value(WorkloadType, msg.workload_type, err, "workload_type"),
            workload_name=msg.workload_name,
            native_tunnel=msg.native_tunnel,
            application_tunnel=app_tunnel,
            services=tuple(services),
            authorization_policies=tuple(msg.authorization_policies),
            status=enum_value(WorkloadStatus, msg.status, err, "status"),
            cluster_id=msg.cluster_id,
            locality=Locality(loc.region, loc.zone, loc.subzone) if loc else Locality(),
            network_mode=enum_value(NetworkMode, msg.network_mode, err, "network_mode"),
            capacity=capacity,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Service:
    """A Kubernetes Service (or ServiceEntry). Resource name = `key` = `<namespace>/<hostname>`."""

    name: str
    namespace: str
    hostname: str
    addresses: tuple[NetworkAddress, ...] = ()  # VIPs; empty for headless
    ports: tuple[Port, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    waypoint: GatewayAddress | None = None
    load_balancing: LoadBalancing | None = None
    ip_families: IpFamilies = IpFamilies.AUTOMATIC
    canonical: bool = False
    ingress_use_waypoint: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"

    def port(self, service_port: int) -> Port | None:
        """The Port entry for `service_port`, or None if the service does not expose it."""
        for p in self.ports:
            if p.service_port == service_port:
                return p
        return None

    @classmethod
    def from_proto(cls, msg: pb.Service, *, resource: str = "") -> Service:
        """The gate: validate a `istio.workload.Service`; raise ConversionError naming the field."""
        err = Err("Service", resource or f"{msg.namespace}/{msg.hostname}")
        if not msg.hostname:
            raise err("hostname", "is empty")
        if not msg.namespace:
            raise err("namespace", "is empty")
        addresses = tuple(
            NetworkAddress(a.network, ip_from_bytes(a.address, err, f"addresses[{i}].address"))
            for i, a in enumerate(msg.addresses)
        )
        lb = None
        if betterproto.serialized_on_wire(msg.load_balancing):
            m = msg.load_balancing
            lb = LoadBalancing(
                tuple(
                    enum_value(
                        LoadBalancingScope, s, err, f"load_balancing.routing_preference[{i}]"
                    )
                    for i, s in enumerate(m.routing_preference)
                ),
                enum_value(LoadBalancingMode, m.mode, err, "load_balancing.mode"),
                enum_value(HealthPolicy, m.health_policy, err, "load_balancing.health_policy"),
            )
        return cls(
            name=msg.name,
            namespace=msg.namespace,
            hostname=msg.hostname,
            addresses=addresses,
            ports=tuple(_port(p, err, f"ports[{i}]") for i, p in enumerate(msg.ports)),
            subject_alt_names=tuple(msg.subject_alt_names),
            waypoint=_gateway(msg.waypoint, err, "waypoint"),
            load_balancing=lb,
            ip_families=enum_value(IpFamilies, msg.ip_families, err, "ip_families"),
            canonical=msg.canonical,
            ingress_use_waypoint=msg.ingress_use_waypoint,
        )


def address_from_proto(msg: pb.Address, *, resource: str) -> Workload | Service:
    """The gate for an `Address` resource: its workload or service, checked against its name.

    The resource name must be the workload's uid or the service's `<namespace>/<hostname>`
    (AMBIENT-INTERNALS §4.1); removals arrive by name, so a mismatch would strand state.
    """
    which, inner = betterproto.which_one_of(msg, "type")
    if which == "workload" and isinstance(inner, pb.Workload):
        workload = Workload.from_proto(inner, resource=resource)
        if workload.uid != resource:
            raise ConversionError(
                "Address", resource, "workload.uid", f"uid {workload.uid!r} != resource name"
            )
        return workload
    if which == "service" and isinstance(inner, pb.Service):
        service = Service.from_proto(inner, resource=resource)
        if service.key != resource:
            raise ConversionError(
                "Address", resource, "service", f"'<namespace>/<hostname>' is {service.key!r}, "
                "not the resource name",
            )
        return service
    raise ConversionError("Address", resource, "type", "neither workload nor service is set")


def _port_number(value: int, err: Err, field: str, *, allow_zero: bool = False) -> int:
    if (value == 0 and allow_zero) or 0 < value <= 65535:
        return value
    raise err(field, f"port {value} is out of range")


def _port(p: pb.Port, err: Err, field: str) -> Port:
    return Port(
        _port_number(p.service_port, err, f"{field}.service_port"),
        _port_number(p.target_port, err, f"{field}.target_port", allow_zero=True),
        enum_value(AppProtocol, p.app_protocol, err, f"{field}.app_protocol"),
    )


def _gateway(msg: pb.GatewayAddress, err: Err, field: str) -> GatewayAddress | None:
    if not betterproto.serialized_on_wire(msg):
        return None
    which, inner = betterproto.which_one_of(msg, "destination")
    port = _port_number(msg.hbone_mtls_port, err, f"{field}.hbone_mtls_port", allow_zero=True)
    destination: NamespacedHostname | NetworkAddress
    if which == "hostname" and isinstance(inner, pb.NamespacedHostname):
        if not inner.hostname:
            raise err(f"{field}.hostname.hostname", "is empty")
        destination = NamespacedHostname(inner.namespace, inner.hostname)
    elif which == "address" and isinstance(inner, pb.NetworkAddress):
        address = ip_from_bytes(inner.address, err, f"{field}.address")
        destination = NetworkAddress(inner.network, address)
    else:
        raise err(field, "has neither hostname nor address")
    return GatewayAddress(destination, port or HBONE_PORT)
