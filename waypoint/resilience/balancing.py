"""Least-request load balancing as Envoy does it: power of two choices. Pure.

Called by the waypoint's upstream pool when it needs an endpoint of the chosen backend Service
(after routing picked the Service). `pick_least_request(endpoints, active, rng)` draws two
distinct endpoints at random and returns the one with fewer active requests (the first drawn
on a tie); with one endpoint it returns it. Istio's default LB is LEAST_REQUEST
(Envoy `choice_count` 2). Envoy draws with replacement; we draw two distinct endpoints, so the
single most-loaded endpoint is never chosen when there are two or more. Endpoint weights are
ignored (Istio's endpoints are equally weighted unless locality says otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Sampler(Protocol):
    def sample(self, population: Sequence[int], k: int) -> list[int]: ...


def pick_least_request(endpoints: Sequence[T], active: Callable[[T], int],
                       rng: Sampler) -> T | None:
    """The less-busy of two random distinct endpoints; None when there are none."""
    if not endpoints:
        return None
    if len(endpoints) == 1:
        return endpoints[0]
    i, j = rng.sample(range(len(endpoints)), 2)
    a, b = endpoints[i], endpoints[j]
    return b if active(b) < active(a) else a
