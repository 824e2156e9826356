"""Pure parts of the Kubernetes config source (istiod_lite.config.kubernetes).

`kinds` (which resources are watched), `cache` (watch events → immutable ClusterModel with
per-object last-good state) and `status` (how an invalid object is reported on itself). None
of them imports kopf or does I/O; the kopf wiring lives in istiod_lite.config.kubernetes and
the API writes in istiod_lite.kube.
"""
