"""Retry decisions: given the policy, the attempt and how it ended, retry or not. Pure.

Called by the waypoint's upstream request loop after every attempt. `Outcome` describes the
attempt (an HTTP status, a gRPC status from headers/trailers, or a reset reason);
`decide_retry(policy, retries_done, outcome, rng)` answers with a `RetryDecision` (retry?,
backoff seconds, why). Conditions are Envoy's `retry_on` values (Istio passes them through):
* `5xx`: any 5xx status, or no response at all (reset, connect failure, refused stream);
* `gateway-error`: 502, 503, 504; `retriable-4xx`: 409;
* `reset`: no response (reset / disconnect / timeout before headers);
* `connect-failure`: the connection to the endpoint failed; `refused-stream`: REFUSED_STREAM;
* `retriable-status-codes`: the status is in the policy's list;
* gRPC: `cancelled` (1), `deadline-exceeded` (4), `resource-exhausted` (8), `internal` (13),
  `unavailable` (14) from `grpc-status`.
Backoff is Envoy's fully jittered exponential: retry k (1-based) waits uniform in
[0, min(max, base * (2^k - 1))), max = 10 * base (25 ms base by default). The caller also
stops when the request timeout has no room left and picks another host (Istio's
`previous_hosts` predicate); both are outside this function.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from waypoint.routing.types import RetryPolicy

RESET_REASONS = ("reset", "connect-failure", "refused-stream", "timeout")
_GRPC = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13,
         "unavailable": 14}


class Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: `status` when headers arrived, else `reset` (RESET_REASONS)."""

    status: int | None = None
    grpc_status: int | None = None
    reset: str = ""

    def __post_init__(self) -> None:
        if (self.status is None) == (not self.reset):
            raise ValueError("an Outcome has either a status or a reset reason")
        if self.reset and self.reset not in RESET_REASONS:
            raise ValueError(f"unknown reset reason {self.reset!r} (one of {RESET_REASONS})")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    backoff: float = 0.0
    reason: str = ""


def retriable(policy: RetryPolicy, o: Outcome) -> str | None:
    """The retry_on condition that `o` satisfies, or None."""
    on = policy.retry_on
    s = o.status
    checks = (
        ("5xx", (s is not None and s >= 500) or bool(o.reset)),
        ("gateway-error", s in (502, 503, 504)),
        ("retriable-4xx", s == 409),
        ("reset", bool(o.reset)),
        ("connect-failure", o.reset == "connect-failure"),
        ("refused-stream", o.reset == "refused-stream"),
        ("retriable-status-codes", s is not None and s in policy.retriable_status_codes),
        *((name, o.grpc_status == code) for name, code in _GRPC.items()),
    )
    return next((name for name, ok in checks if ok and name in on), None)


def backoff(policy: RetryPolicy, retry_number: int, rng: Uniform) -> float:
    base = policy.backoff_base
    upper = min(10 * base, base * (2 ** retry_number - 1))
    return rng.uniform(0, upper) if upper > 0 else 0.0


def decide_retry(policy: RetryPolicy, retries_done: int, outcome: Outcome,
                 rng: Uniform) -> RetryDecision:
    """Whether to make retry number `retries_done + 1` after `outcome`, and how long to wait."""
    condition = retriable(policy, outcome)
    if condition is None:
        return RetryDecision(False, 0.0, "not retriable under the policy")
    if retries_done >= policy.attempts:
        return RetryDecision(False, 0.0, f"{condition}, but {policy.attempts} retries used")
    return RetryDecision(True, backoff(policy, retries_done + 1, rng), condition)
