"""ztunnel's per-pod L4 data path: outbound 15001, inbound HBONE 15008, inbound plaintext 15006.

`pod_proxy.pod_proxy_factory(ProxyContext(...))` is what the ZDS workload manager runs per pod;
`next_hop.build_request` is the pure routing decision. See docs/ztunnel-data-path.md.
"""
