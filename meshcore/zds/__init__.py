"""ZDS, the node agent ⇄ ztunnel protocol, shared by both ends (AMBIENT-INTERNALS §5.5).

`codec` (sans-IO datagrams ⇄ frozen dataclasses, re-exported here), `session` (the conversation
rules as a table: `ZdsSession(Role.AGENT | Role.ZTUNNEL)`), `seqpacket` (SCM_RIGHTS send/receive
on a SOCK_SEQPACKET socket, netns fd check).
"""

from meshcore.zds.codec import (
    MAX_MESSAGE,
    Ack,
    AddWorkload,
    DelWorkload,
    Hello,
    KeepWorkload,
    Request,
    SnapshotSent,
    ZdsEncodeError,
    ZdsError,
    ZdsProtocolError,
    decode_hello,
    decode_request,
    decode_response,
    encode_hello,
    encode_request,
    encode_response,
    fd_count,
)

__all__ = [
    "MAX_MESSAGE",
    "Ack",
    "AddWorkload",
    "DelWorkload",
    "Hello",
    "KeepWorkload",
    "Request",
    "SnapshotSent",
    "ZdsEncodeError",
    "ZdsError",
    "ZdsProtocolError",
    "decode_hello",
    "decode_request",
    "decode_response",
    "encode_hello",
    "encode_request",
    "encode_response",
    "fd_count",
]
