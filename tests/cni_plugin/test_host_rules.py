"""The node's kubelet-probe exemption as data (no kernel)."""

from __future__ import annotations

import socket
import struct

import pytest

from cni_plugin.redirect import rules as R
from cni_plugin.redirect.host_rules import (
    HOST_TABLE,
    PROBE_SET_V4,
    PROBE_SET_V6,
    HostProbeConfig,
    build_host_table,
)


def test_table_shape_follows_istios_hostprobe_rules() -> None:
    """One srcnat postrouting chain; per family: tcp, skuid, daddr in the set, SNAT to the
    probe address."""
    table = build_host_table(HostProbeConfig(1000, frozenset({"10.0.0.9", "fd00::9"})))
    assert table.name == HOST_TABLE
    assert table.chains == (R.Chain("postrouting", 4, "nat", 100),)
    v4, v6 = table.rules
    assert R.Cmp("eq", struct.pack("=I", 1000)) in v4.exprs
    assert v4.exprs[-4:] == (R.Lookup(PROBE_SET_V4), R.Counter(),
                             R.Immediate(socket.inet_aton(R.PROBE_IPV4)), R.Snat(R.NFPROTO_IPV4))
    assert v6.exprs[-4:] == (R.Lookup(PROBE_SET_V6), R.Counter(),
                             R.Immediate(socket.inet_pton(socket.AF_INET6, R.PROBE_IPV6)),
                             R.Snat(R.NFPROTO_IPV6))
    sets = {s.name: s for s in table.sets}
    assert sets[PROBE_SET_V4].elements == (socket.inet_aton("10.0.0.9"),)
    assert sets[PROBE_SET_V6].elements == (socket.inet_pton(socket.AF_INET6, "fd00::9"),)


def test_same_ips_in_any_order_build_equal_tables() -> None:
    """Elements are sorted, so equal IP sets give equal tables (no needless reinstall)."""
    a = build_host_table(HostProbeConfig(0, frozenset({"10.0.0.2", "10.0.0.1", "10.0.0.3"})))
    b = build_host_table(HostProbeConfig(0, frozenset({"10.0.0.3", "10.0.0.1", "10.0.0.2"})))
    assert a == b


@pytest.mark.parametrize(("uid", "ips"), [
    pytest.param(-1, frozenset(), id="negative-uid"),
    pytest.param(2**32, frozenset(), id="uid-too-large"),
    pytest.param(0, frozenset({"10.0.0.300"}), id="bad-ip"),
])
def test_invalid_config_is_refused(uid: int, ips: frozenset[str]) -> None:
    """A uid outside 0..2^32-1 or a malformed IP is a ValueError, never a half-built table."""
    with pytest.raises(ValueError):
        HostProbeConfig(uid, ips)
