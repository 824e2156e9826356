"""Test infrastructure shared by the suite and by `bench/`: network namespaces (`netns`), a
packet sniffer (`capture`), Envoy as an HBONE peer (`envoy`), a TCP echo server (`echo`),
workload credentials on disk (`creds`) and the pytest fixtures over them (`fixtures`, loaded by
`tests/conftest.py`). Nothing here is product code; the product never imports it.
"""
