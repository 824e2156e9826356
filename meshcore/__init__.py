"""Code shared by the four ambient-py packages, kept in exactly one place.

What lives here: the generated protobuf messages (`meshcore.protos`), the SPIFFE identity type
(`meshcore.identity`), certificate primitives (`meshcore.pki`), and, as they arrive, the HBONE
protocol core, the authorization evaluator and the manifest model. `istiod_lite`, `ztunnel`,
`waypoint` and `cni_plugin` import from here and never from each other.
"""
