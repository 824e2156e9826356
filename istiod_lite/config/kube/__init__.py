"""Pure parts of the Kubernetes config source (istiod_lite.config.kubernetes).

`kinds` (which resources are watched), `cache` (watch events → immutable ClusterModel with
per-object last-good state), `status` (how an invalid object is reported on itself) and
`route_status` (HTTPRoute `status.parents`). None of them imports kopf or does I/O; the kopf
wiring lives in istiod_lite.config.kubernetes, the HTTPRoute status writes in
istiod_lite.config.route_writer, and the API client is meshcore.kube.KubeClient.
"""
