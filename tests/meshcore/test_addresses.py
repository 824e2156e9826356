"""split_host_port: every HOST:PORT form the command lines accept, and the refusals."""

import pytest

from meshcore.addresses import split_host_port


@pytest.mark.parametrize(("text", "want"), [
    pytest.param("10.0.0.1:15012", ("10.0.0.1", 15012), id="ipv4-port"),
    pytest.param("istiod.istio-system.svc", ("istiod.istio-system.svc", 9), id="host-default"),
    pytest.param("[::1]:15000", ("::1", 15000), id="ipv6-port"),
    pytest.param("[fd00::1]", ("fd00::1", 9), id="ipv6-brackets-default"),
    pytest.param("fd00::1", ("fd00::1", 9), id="bare-ipv6-default"),
])
def test_accepted_forms(text: str, want: tuple[str, int]) -> None:
    """Host and port come out; a missing port is the default."""
    assert split_host_port(text, 9) == want


@pytest.mark.parametrize("text", [
    pytest.param("h:99999", id="port-too-large"),
    pytest.param("h:0", id="port-zero"),
    pytest.param("h:http", id="port-not-a-number"),
    pytest.param(":15012", id="no-host"),
    pytest.param("[::1", id="unclosed-bracket"),
    pytest.param("[::1]x", id="junk-after-bracket"),
])
def test_refused_forms_say_why(text: str) -> None:
    """Nonsense is a ValueError quoting the input."""
    with pytest.raises(ValueError, match=r"is not|has no host"):
        split_host_port(text, 9)


def test_empty_host_means_the_given_listen_address() -> None:
    """`:PORT` with `empty_host` is that host (a listener's all-addresses form)."""
    assert split_host_port(":15012", 1, empty_host="0.0.0.0") == ("0.0.0.0", 15012)
