"""ZDS (ztunnel discovery) message codec, sans-IO: datagrams + fd counts in, typed messages out.

ZDS runs over a unix SOCK_SEQPACKET socket between the CNI node agent (server) and ztunnel (client):
one protobuf message per datagram, no length prefix, at most `MAX_MESSAGE` (1 KiB) bytes, and the
pod's netns fd as SCM_RIGHTS ancillary data on `AddWorkload` only (AMBIENT-INTERNALS §5.5).

Who calls it: the agent's ZDS server (encodes requests, decodes hellos and acks) and ztunnel's
in-pod workload manager (the reverse). They move bytes and fds with `meshcore.zds.seqpacket`.

The internal types (`Hello`, `AddWorkload`, `KeepWorkload`, `DelWorkload`, `SnapshotSent`, `Ack`)
are frozen dataclasses; protobuf types appear only inside this module (one gate per direction).
Invariants:
- `decode_*(encode_*(m), fd_count(m)) == m` for every message;
- a datagram that is empty, larger than 1 KiB, not protobuf, lacks its oneof payload, carries an
  unsupported hello version, or arrives with the wrong number of fds raises `ZdsProtocolError`
  (the peer's fault; close the connection, and close any fds that came with it);
- encoding something that would exceed 1 KiB raises `ZdsEncodeError` (our fault).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import betterproto

from meshcore.errors import MeshCoreError
from meshcore.protos.istio.workload.zds import Ack as PbAck
from meshcore.protos.istio.workload.zds import AddWorkload as PbAddWorkload
from meshcore.protos.istio.workload.zds import DelWorkload as PbDelWorkload
from meshcore.protos.istio.workload.zds import KeepWorkload as PbKeepWorkload
from meshcore.protos.istio.workload.zds import SnapshotSent as PbSnapshotSent
from meshcore.protos.istio.workload.zds import (
    Version,
    WorkloadInfo,
    WorkloadRequest,
    WorkloadResponse,
    ZdsHello,
)

MAX_MESSAGE = 1024
SUPPORTED_VERSION = 1  # Version.V1


class ZdsError(MeshCoreError):
    """Base of ZDS errors."""


class ZdsProtocolError(ZdsError):
    """The peer sent something that is not valid ZDS; drop the connection."""


class ZdsEncodeError(ZdsError):
    """We tried to send something ZDS cannot carry (too large); a bug or bad input on our side."""


@dataclass(frozen=True)
class Hello:
    """ztunnel → agent, first datagram on a connection."""

    version: int = SUPPORTED_VERSION


@dataclass(frozen=True)
class AddWorkload:
    """Agent → ztunnel: start proxying pod `uid` (Kubernetes pod UID); the netns fd rides along."""

    uid: str
    name: str = ""
    namespace: str = ""
    service_account: str = ""


@dataclass(frozen=True)
class KeepWorkload:
    """Agent → ztunnel, snapshot only: keep pod `uid` although the agent has no netns fd for it."""

    uid: str


@dataclass(frozen=True)
class DelWorkload:
    """Agent → ztunnel: stop proxying pod `uid`."""

    uid: str


@dataclass(frozen=True)
class SnapshotSent:
    """Agent → ztunnel: every known pod has been sent; drop the ones not named."""


@dataclass(frozen=True)
class Ack:
    """ztunnel → agent, answer to each request; empty `error` = ACK, otherwise NACK."""

    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


Request = AddWorkload | KeepWorkload | DelWorkload | SnapshotSent


def fd_count(message: Request | Hello | Ack) -> int:
    """How many fds must travel with `message` (1 for AddWorkload, 0 otherwise)."""
    return 1 if isinstance(message, AddWorkload) else 0


def _checked(data: bytes, what: str) -> bytes:
    if len(data) > MAX_MESSAGE:
        raise ZdsEncodeError(f"{what} encodes to {len(data)} bytes; ZDS datagrams are limited to "
                             f"{MAX_MESSAGE} (shorten the pod name/namespace/service account?)")
    return data


def _check_incoming(data: bytes, fds: int, expected_fds: int, what: str) -> None:
    if len(data) > MAX_MESSAGE:
        raise ZdsProtocolError(f"{what} of {len(data)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    if fds != expected_fds:
        raise ZdsProtocolError(f"{what} arrived with {fds} file descriptor(s); expected "
                               f"{expected_fds} (only AddWorkload carries the pod netns fd)")


_REQUEST_TYPES: dict[str, type[Any]] = {
    "add": PbAddWorkload, "keep": PbKeepWorkload, "del_": PbDelWorkload,
    "snapshot_sent": PbSnapshotSent,
}


def _text(value: object, field: str) -> str:
    # betterproto accepts a field sent with the wrong wire type; such values are not strings.
    if not isinstance(value, str):
        raise ZdsProtocolError(f"field {field!r} is not a string (wrong wire type)")
    return value


def _payload(pb: betterproto.Message) -> tuple[str, Any]:
    return betterproto.which_one_of(pb, "payload")


# --------------------------------------------------------------------------------------------
# Hello
# --------------------------------------------------------------------------------------------
def encode_hello(hello: Hello = Hello()) -> bytes:
    return _checked(bytes(ZdsHello(version=Version(hello.version))), "ZdsHello")


def decode_hello(data: bytes, fds: int = 0) -> Hello:
    _check_incoming(data, fds, 0, "ZdsHello")
    try:
        pb = ZdsHello().parse(data)
        version = int(pb.version)
    except Exception as exc:  # betterproto raises assorted errors on garbage
        raise ZdsProtocolError(f"ZdsHello is not valid protobuf: {exc!r}") from None
    if version != SUPPORTED_VERSION:
        raise ZdsProtocolError(f"ZdsHello asks for version {version}; this agent speaks only "
                               f"V1 (upgrade or downgrade ztunnel to a matching release)")
    return Hello(version)


# --------------------------------------------------------------------------------------------
# WorkloadRequest (agent -> ztunnel)
# --------------------------------------------------------------------------------------------
def encode_request(request: Request) -> bytes:
    match request:
        case AddWorkload(uid, name, namespace, sa):
            pb = WorkloadRequest(add=PbAddWorkload(uid=uid, workload_info=WorkloadInfo(
                name=name, namespace=namespace, service_account=sa)))
        case KeepWorkload(uid):
            pb = WorkloadRequest(keep=PbKeepWorkload(uid=uid))
        case DelWorkload(uid):
            pb = WorkloadRequest(del_=PbDelWorkload(uid=uid))
        case SnapshotSent():
            pb = WorkloadRequest(snapshot_sent=PbSnapshotSent())
        case _:
            raise TypeError(f"not a ZDS request: {request!r}")
    return _checked(bytes(pb), f"WorkloadRequest({type(request).__name__})")


def decode_request(data: bytes, fds: int) -> Request:
    """One WorkloadRequest datagram that came with `fds` file descriptors."""
    if len(data) > MAX_MESSAGE:
        raise ZdsProtocolError(f"WorkloadRequest of {len(data)} bytes exceeds the "
                               f"{MAX_MESSAGE}-byte limit")
    try:
        pb = WorkloadRequest().parse(data)
        which, payload = _payload(pb)
    except Exception as exc:
        raise ZdsProtocolError(f"WorkloadRequest is not valid protobuf: {exc!r}") from None
    result: Request
    expected = _REQUEST_TYPES.get(which)
    if expected is None or not isinstance(payload, expected):
        raise ZdsProtocolError("WorkloadRequest has no valid payload (add, keep, del or "
                               f"snapshot_sent); got {which or 'nothing'}")
    if which == "add":
        info = payload.workload_info
        if not isinstance(info, WorkloadInfo):
            raise ZdsProtocolError("AddWorkload.workload_info is not a WorkloadInfo message")
        result = AddWorkload(_text(payload.uid, "uid"), _text(info.name, "name"),
                             _text(info.namespace, "namespace"),
                             _text(info.service_account, "service_account"))
    elif which == "keep":
        result = KeepWorkload(_text(payload.uid, "uid"))
    elif which == "del_":
        result = DelWorkload(_text(payload.uid, "uid"))
    else:
        result = SnapshotSent()
    if isinstance(result, AddWorkload | KeepWorkload | DelWorkload) and not result.uid:
        raise ZdsProtocolError(f"{type(result).__name__} without a pod uid")
    _check_incoming(data, fds, fd_count(result), f"WorkloadRequest({type(result).__name__})")
    return result


# --------------------------------------------------------------------------------------------
# WorkloadResponse (ztunnel -> agent)
# --------------------------------------------------------------------------------------------
def encode_response(ack: Ack) -> bytes:
    error = ack.error
    if len(error.encode()) > MAX_MESSAGE - 16:  # keep NACK texts within one datagram
        error = error.encode()[: MAX_MESSAGE - 16].decode(errors="ignore")
    return _checked(bytes(WorkloadResponse(ack=PbAck(error=error))), "WorkloadResponse")


def decode_response(data: bytes, fds: int = 0) -> Ack:
    _check_incoming(data, fds, 0, "WorkloadResponse")
    try:
        pb = WorkloadResponse().parse(data)
        which, payload = _payload(pb)
    except Exception as exc:
        raise ZdsProtocolError(f"WorkloadResponse is not valid protobuf: {exc!r}") from None
    if which != "ack" or not isinstance(payload, PbAck):
        raise ZdsProtocolError("WorkloadResponse has no ack payload")
    return Ack(_text(payload.error, "error"))
