"""Outlier detection: consecutive 5xx ⇒ eject the endpoint for a while. A state table. Pure.

Called by the waypoint's upstream pool: after every response (`Event.SUCCESS` /
`Event.FAILURE`, see `classify`) and on a timer (`Event.TICK`) it calls
`OutlierDetector.record(host, event, now)`, which returns a new detector (the pool keeps the
one current value: one writer); `available(hosts)` filters the endpoints load balancing may
use. Config mirrors Istio's DestinationRule `outlierDetection` (consecutive5xxErrors 5,
baseEjectionTime 30s, maxEjectionPercent 10, Envoy's max ejection time 300s).

Rules (one host; `n` = consecutive failures, `k` = times ejected so far, T = threshold):
| state   | event             | condition               | next state, effect                   |
| HEALTHY | SUCCESS           |                         | HEALTHY, n := 0                      |
| HEALTHY | FAILURE           | n + 1 < T               | HEALTHY, n += 1                      |
| HEALTHY | FAILURE           | n + 1 >= T, may eject   | EJECTED until now + min(max,         |
|         |                   |                         |   base * (k + 1)); k += 1; n := 0    |
| HEALTHY | FAILURE           | n + 1 >= T, may not     | HEALTHY, n += 1 (next failure tries) |
| HEALTHY | TICK              |                         | unchanged                            |
| EJECTED | SUCCESS / FAILURE | late in-flight answers  | unchanged                            |
| EJECTED | TICK              | now >= until            | HEALTHY, n := 0 (k kept)             |
| EJECTED | TICK              | now < until             | unchanged                            |
Ejection is allowed when no host is ejected yet (Envoy always allows one) or when
100 * (ejected + 1) / total ≤ max_ejection_percent. Unknown hosts start HEALTHY. Envoy also
decays `k` after healthy intervals; we do not (an endpoint that keeps failing stays out longer).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType


class State(enum.Enum):
    HEALTHY = "healthy"
    EJECTED = "ejected"


class Event(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"  # a 5xx, or no response (reset, connect failure)
    TICK = "tick"


@dataclasses.dataclass(frozen=True, slots=True)
class OutlierConfig:
    consecutive_5xx: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class HostState:
    state: State = State.HEALTHY
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


def classify(status: int | None) -> Event:
    """SUCCESS for a status below 500, FAILURE for a 5xx or None (no response)."""
    return Event.FAILURE if status is None or status >= 500 else Event.SUCCESS


def step(h: HostState, event: Event, now: float, config: OutlierConfig,
         may_eject: bool) -> HostState:
    """The table above for one host. `may_eject`: the pool-level percentage check passed."""
    if h.state is State.EJECTED:
        if event is Event.TICK and now >= h.ejected_until:
            return dataclasses.replace(h, state=State.HEALTHY, failures=0)
        return h
    if event is Event.SUCCESS:
        return dataclasses.replace(h, failures=0)
    if event is Event.TICK:
        return h
    failures = h.failures + 1
    if failures < config.consecutive_5xx or not may_eject:
        return dataclasses.replace(h, failures=failures)
    duration = min(config.max_ejection_time, config.base_ejection_time * (h.ejections + 1))
    return HostState(State.EJECTED, 0, h.ejections + 1, now + duration)


@dataclasses.dataclass(frozen=True, slots=True)
class OutlierDetector:
    """Per-host state for one backend Service's endpoints. Immutable; methods return new ones."""

    config: OutlierConfig = OutlierConfig()
    hosts: Mapping[str, HostState] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))

    def state(self, host: str) -> HostState:
        return self.hosts.get(host, HostState())

    def ejected(self) -> frozenset[str]:
        return frozenset(h for h, s in self.hosts.items() if s.state is State.EJECTED)

    def may_eject(self, total: int) -> bool:
        n = len(self.ejected())
        return n == 0 or (total > 0 and 100 * (n + 1) / total <= self.config.max_ejection_percent)

    def record(self, host: str, event: Event, now: float, total_hosts: int) -> OutlierDetector:
        new = step(self.state(host), event, now, self.config, self.may_eject(total_hosts))
        return dataclasses.replace(self, hosts=MappingProxyType({**self.hosts, host: new}))

    def tick(self, now: float) -> OutlierDetector:
        hosts = {h: step(s, Event.TICK, now, self.config, False) for h, s in self.hosts.items()}
        return dataclasses.replace(self, hosts=MappingProxyType(hosts))

    def available(self, hosts: Iterable[str]) -> Sequence[str]:
        out = self.ejected()
        return [h for h in hosts if h not in out]
