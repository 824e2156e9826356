"""`HOST:PORT` text → (host, port), the one parser behind every `--something-address` flag.

Who calls it: the command lines of istiod-lite, ztunnel and the waypoint, and ambientctl's
admin client; each turns the `ValueError` into its own error naming the flag. Pure.

Accepted: `host:port`, `[v6]:port`, `[v6]`, `host` (then `default_port`); a bare IPv6 address
(more than one colon, no brackets) is a host without a port. Ports must be 1-65535.
"""

from __future__ import annotations


def split_host_port(text: str, default_port: int, *, empty_host: str | None = None
                    ) -> tuple[str, int]:
    """(host, port) from `text`; ValueError naming what is wrong. With `empty_host`, `:PORT`
    means that host (a listener's "all addresses"); without, a host is required."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        if empty_host is None:
            raise ValueError(f"{text!r} has no host")
        host = empty_host
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} in {text!r} is not a TCP port (1-65535)")
    return host, int(port_text)
