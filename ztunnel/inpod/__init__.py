"""ztunnel's in-pod mode: pods learnt over ZDS from the node agent, served from inside their netns.

Modules: `workload_manager` (the ZDS client; start here), `protocol_state` (the session rules as
a pure table), `proxies` (the table of running / pending pod proxies), `pod` (the per-pod proxy
interface a data path implements), `pod_listeners` (the three in-pod listeners and a ready-made
`ListenerPodProxy`), `netns` (creating sockets inside a pod netns). See docs/zds.md.
"""
