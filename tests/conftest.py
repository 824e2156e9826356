"""Registers the shared fixtures of tests/support (namespaces, PKI, Envoy, echo servers)."""

pytest_plugins = ["tests.support.fixtures"]
