"""The waypoint's upstream resilience decisions (pure): least-request balancing, outlier
detection, retries. The I/O layer calls these around each upstream attempt. See
docs/waypoint.md.
"""

from waypoint.resilience.balancing import pick_least_request
from waypoint.resilience.outlier import (
    Event,
    HostState,
    OutlierConfig,
    OutlierDetector,
    State,
    classify,
    step,
)
from waypoint.resilience.retry import Outcome, RetryDecision, backoff, decide_retry, retriable

__all__ = [
    "Event",
    "HostState",
    "Outcome",
    "OutlierConfig",
    "OutlierDetector",
    "RetryDecision",
    "State",
    "backoff",
    "classify",
    "decide_retry",
    "pick_least_request",
    "retriable",
    "step",
]
