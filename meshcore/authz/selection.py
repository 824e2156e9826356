"""Policy selection for a destination workload, and the snapshot-level entry points.

Called by ztunnel's inbound paths and `ambientctl why`, which hold a `meshcore.wds` Snapshot.
Selection is `meshcore.wds.lookup.policies_for` (AMBIENT-INTERNALS §7.1: GLOBAL policies, the
workload namespace's NAMESPACE policies, and the policies the workload lists in
`authorization_policies`; unknown names are skipped, as ztunnel does with a warning). This
module adds the list of skipped names, so callers can log them and `why` can show them.
"""

from __future__ import annotations

from meshcore.authz.attributes import ConnectionAttributes
from meshcore.authz.decision import Decision, evaluate
from meshcore.authz.explain import Explanation, explain
from meshcore.wds.lookup import policies_for
from meshcore.wds.store import Snapshot
from meshcore.wds.workload import Workload


def unknown_policies(snapshot: Snapshot, workload: Workload) -> tuple[str, ...]:
    """Names the workload lists in `authorization_policies` that the snapshot does not hold."""
    return tuple(k for k in workload.authorization_policies if k not in snapshot.policies)


def evaluate_in(snapshot: Snapshot, conn: ConnectionAttributes) -> Decision:
    """`evaluate` against the policies the snapshot selects for `conn.destination`."""
    return evaluate(conn, policies_for(snapshot, conn.destination))


def explain_in(snapshot: Snapshot, conn: ConnectionAttributes) -> Explanation:
    """`explain` against the selected policies, listing the skipped unknown names."""
    return explain(conn, policies_for(snapshot, conn.destination),
                   unknown=unknown_policies(snapshot, conn.destination))
