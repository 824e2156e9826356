"""`python -m bench` (`nox -s bench`, root required): benchmarks measured against references in
the same run. Sections (see `bench.sections`) each produce rows of one printed table and a JSON
document under `bench-results/`. The HBONE data-plane section compares direct TCP, an Envoy HBONE
pair and our HBONE pair between two network namespaces (docs/benchmarks.md).
"""
