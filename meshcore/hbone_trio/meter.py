"""`RelayMeter`: live byte counts of a running relay or splice, readable at any time.

Who calls it: ztunnel makes one per connection and hands it to `relay(..., meter=)`; the
relay (or `splice`) points it at its own per-direction counters, so metering costs the data path
nothing; ztunnel's metrics read `totals()` at every scrape (`meshcore.telemetry` recorders).
"""

from __future__ import annotations

from collections.abc import Callable


class RelayMeter:
    """`totals()` is the pair of byte counts so far ((0, 0) before the relay starts): (a_to_b,
    b_to_a) for `relay(a, b)`, (to_socket, to_tunnel) for `splice`."""

    __slots__ = ("_read",)

    def __init__(self) -> None:
        self._read: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def attach(self, read: Callable[[], tuple[int, int]]) -> None:
        """Called by the relay: where the live counts come from."""
        self._read = read

    def totals(self) -> tuple[int, int]:
        return self._read()
