"""SPIFFE identity parsing and formatting."""

import pytest

from meshcore.identity import InvalidIdentityError, SpiffeId


def test_round_trip() -> None:
    """A well-formed SPIFFE URI parses and formats back to itself."""
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/cart")
    assert sid == SpiffeId("cluster.local", "shop", "cart")
    assert sid.uri == "spiffe://cluster.local/ns/shop/sa/cart"
    assert sid.principal == "cluster.local/ns/shop/sa/cart"


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("https://cluster.local/ns/a/sa/b", id="wrong scheme"),
        pytest.param("spiffe://cluster.local/ns/a/sa", id="too few segments"),
        pytest.param("spiffe://cluster.local/ns/a/sa/b/c", id="too many segments"),
        pytest.param("spiffe://cluster.local/namespace/a/sa/b", id="ns literal"),
        pytest.param("spiffe://cluster.local/ns/A/sa/b", id="uppercase namespace"),
        pytest.param("spiffe:///ns/a/sa/b", id="empty trust domain"),
    ],
)
def test_rejects_malformed(uri: str) -> None:
    """Anything but spiffe://td/ns/<ns>/sa/<sa> is rejected with a reason."""
    with pytest.raises(InvalidIdentityError):
        SpiffeId.parse(uri)


def test_workload_api_defaults() -> None:
    """Empty trust domain and service account mean cluster.local and default."""
    assert SpiffeId.for_workload("shop") == SpiffeId("cluster.local", "shop", "default")
