"""Workload identities of a proxy (ztunnel, waypoint): the CA client and certificate manager.

`manager.CertificateManager` (trio) keeps one renewing certificate per identity and calls the
CA through `ca_client.CaClient` (grpclib on the asyncio bridge). See docs/ca.md.
"""
