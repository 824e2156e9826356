"""Interop tests: a real Envoy as the HBONE peer (marked interop; most also netns)."""
