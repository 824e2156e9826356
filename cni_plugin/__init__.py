"""ambient-py's CNI side: the `ambient-cni` plugin executable and the node agent.

`plugin`/`__main__` (the chained CNI plugin, standard library only), `agent_protocol` (plugin ⇄
agent wire format), `agent` (the node agent: plugin server, ZDS server), `redirect` (the in-pod
nftables/policy-routing rules, applied through pyroute2). See docs/cni.md.
"""
