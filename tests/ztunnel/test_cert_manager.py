"""The certificate manager in trio virtual time: caching, renewal, back-off, expiry, sharing."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

import pytest
import trio
from trio.testing import MockClock

from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.workload_identity.manager import CertificateManager
from ztunnel.errors import CertificateRefusedError, CertificateUnavailableError

pytestmark = pytest.mark.trio

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ALICE = SpiffeId("cluster.local", "shop", "alice")
BOB = SpiffeId("cluster.local", "shop", "bob")
HOUR = 3600.0


def clock() -> dt.datetime:
    """Wall time that follows trio's (virtual) clock."""
    return EPOCH + dt.timedelta(seconds=trio.current_time())


class TestCa:
    """A CA call signing with real meshcore.pki on the virtual clock; scripted failures."""

    __test__ = False

    def __init__(self, lifetime: dt.timedelta = dt.timedelta(hours=24), delay: float = 0.0):
        self.root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=3650), now=EPOCH)
        self.lifetime = lifetime
        self.delay = delay
        self.calls: list[tuple[float, SpiffeId]] = []
        self.fail_next = 0
        self.fail_after: int | None = None  # fail every call after this many successes
        self.refuse: set[SpiffeId] = set()
        self.in_flight = self.max_in_flight = 0

    async def __call__(self, identity: SpiffeId, csr_pem: bytes) -> Sequence[str]:
        self.calls.append((trio.current_time(), identity))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await trio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if identity in self.refuse:
            raise CertificateRefusedError(identity, "PERMISSION_DENIED", "not on this node")
        successes = len(self.calls) - 1
        if self.fail_next > 0 or (self.fail_after is not None and successes >= self.fail_after):
            self.fail_next = max(0, self.fail_next - 1)
            raise OSError("CA unreachable")
        request = pki.parse_csr(csr_pem)
        leaf = pki.sign_workload_certificate(
            self.root, request.public_key, request.identity, lifetime=self.lifetime, now=clock()
        )
        return [pki.cert_pem(leaf).decode(), pki.cert_pem(self.root.certificate).decode()]

    def times(self) -> list[float]:
        return [t for t, _ in self.calls]


async def start(nursery: trio.Nursery, ca: TestCa, **kwargs: object) -> CertificateManager:
    kwargs.setdefault("jitter_fraction", 0.0)
    manager = CertificateManager(ca, clock=clock, **kwargs)  # type: ignore[arg-type]
    await nursery.start(manager.run)
    return manager


async def test_first_wait_fetches_and_returns_valid_credentials(autojump_clock: MockClock) -> None:
    """wait_credentials fetches once; the credentials hold our key, the leaf and the CA root."""
    ca = TestCa()
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        creds = await manager.wait_credentials(ALICE)
        again = await manager.wait_credentials(ALICE)
        nursery.cancel_scope.cancel()
    assert again is creds
    assert len(ca.calls) == 1
    assert creds.identity == ALICE
    leaf = pki.load_pem_chain(creds.chain_pem)
    assert len(leaf) == 1 and pki.spiffe_ids_of(leaf[0]) == [ALICE]
    assert pki.load_private_key_pem(creds.key_pem).public_key() == leaf[0].public_key()
    assert pki.load_pem_chain(creds.roots_pem) == [ca.root.certificate]
    assert creds.not_after == leaf[0].not_valid_after_utc


async def test_renews_at_half_life(autojump_clock: MockClock) -> None:
    """Without jitter the renewals of a 24 h certificate happen every 12 h."""
    ca = TestCa()
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        first = await manager.wait_credentials(ALICE)
        await trio.sleep(37 * HOUR)
        latest = await manager.wait_credentials(ALICE)
        nursery.cancel_scope.cancel()
    assert ca.times() == [0.0, 12 * HOUR, 24 * HOUR, 36 * HOUR]
    assert latest.not_after - first.not_after == dt.timedelta(hours=36)


async def test_renewal_jitter_stays_before_half_life(autojump_clock: MockClock) -> None:
    """With jitter each renewal lands within the last 10% of lifetime before half-life."""
    ca = TestCa()
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca, rng=random.Random(7), jitter_fraction=0.1)
        await manager.wait_credentials(ALICE)
        await trio.sleep(100 * HOUR)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(ca.times(), ca.times()[1:], strict=False)]
    assert len(gaps) >= 8
    assert all(0.4 * 24 * HOUR <= g <= 0.5 * 24 * HOUR for g in gaps), gaps
    assert len(set(gaps)) > 1


async def test_failures_back_off_exponentially_to_150s(autojump_clock: MockClock) -> None:
    """Failed attempts retry after 0.5 s, doubling, capped at 150 s; success resets."""
    ca = TestCa()
    ca.fail_next = 11
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        manager.prefetch(ALICE)
        await trio.sleep(1000)
        creds = manager.credentials_nowait(ALICE)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(ca.times(), ca.times()[1:], strict=False)]
    assert gaps[:11] == [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150]
    assert creds is not None
    stats = manager.statistics()
    assert (stats.fetches_failed, stats.fetches_succeeded) == (11, 1)


async def test_old_certificate_served_during_failures_never_after_expiry(
    autojump_clock: MockClock,
) -> None:
    """While renewals fail the old certificate is served until it expires, then never again."""
    ca = TestCa(lifetime=dt.timedelta(minutes=10))
    ca.fail_after = 1
    served: list[tuple[dt.datetime, dt.datetime]] = []
    errors = 0
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        for _ in range(40):
            try:
                creds = await manager.wait_credentials(ALICE)
            except CertificateUnavailableError:
                errors += 1
            else:
                served.append((clock(), creds.not_after))
            await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert all(now < not_after for now, not_after in served)
    assert len({na for _, na in served}) == 1  # the single issued cert, served past renewal time
    assert len(served) >= 15  # 10 min of a 10 min cert, polled every 30 s after the 5 min mark
    assert errors > 0
    assert len(ca.calls) > 5  # kept retrying


async def test_concurrent_waiters_share_one_ca_call(autojump_clock: MockClock) -> None:
    """Ten tasks waiting for one identity cause a single CA call and get the same object."""
    ca = TestCa(delay=2.0)
    results = []

    async def waiter(manager: CertificateManager) -> None:
        results.append(await manager.wait_credentials(ALICE))

    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        async with trio.open_nursery() as waiters:
            for _ in range(10):
                waiters.start_soon(waiter, manager)
        nursery.cancel_scope.cancel()
    assert len(ca.calls) == 1
    assert len(results) == 10 and all(r is results[0] for r in results)


async def test_refusal_reaches_waiter_with_identity_and_reason(autojump_clock: MockClock) -> None:
    """A CA refusal while no certificate exists fails the waiter with a typed, named error."""
    ca = TestCa()
    ca.refuse.add(BOB)
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        with pytest.raises(CertificateUnavailableError) as caught:
            await manager.wait_credentials(BOB)
        nursery.cancel_scope.cancel()
    assert caught.value.identity == BOB
    assert isinstance(caught.value.cause, CertificateRefusedError)
    assert caught.value.cause.reason == "PERMISSION_DENIED"
    assert str(BOB) in str(caught.value)


async def test_wrong_identity_from_ca_is_a_failure(autojump_clock: MockClock) -> None:
    """A leaf for another identity is never cached; the waiter learns why."""
    ca = TestCa()

    async def wrong(identity: SpiffeId, csr_pem: bytes) -> Sequence[str]:
        other_csr = pki.build_csr(pki.new_private_key(), BOB)
        return await ca(BOB, other_csr)

    async with trio.open_nursery() as nursery:
        manager = CertificateManager(wrong, clock=clock)
        await nursery.start(manager.run)
        with pytest.raises(CertificateUnavailableError, match="leaf for"):
            await manager.wait_credentials(ALICE)
        assert manager.credentials_nowait(ALICE) is None
        nursery.cancel_scope.cancel()


async def test_forget_stops_renewal_and_releases_waiters(autojump_clock: MockClock) -> None:
    """A forgotten identity is not renewed any more and its pending waiters are told."""
    ca = TestCa(delay=5.0)
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        await manager.wait_credentials(ALICE)
        manager.forget(ALICE)
        assert manager.identities() == frozenset()
        await trio.sleep(48 * HOUR)
        assert len(ca.calls) == 1

        async def forget_soon() -> None:
            await trio.sleep(1)
            manager.forget(BOB)

        nursery.start_soon(forget_soon)
        with pytest.raises(CertificateUnavailableError, match="forgotten"):
            await manager.wait_credentials(BOB)
        nursery.cancel_scope.cancel()


async def test_at_most_eight_fetches_at_once(autojump_clock: MockClock) -> None:
    """Twenty identities at once never put more than eight CSRs in flight."""
    ca = TestCa(delay=1.0)
    async with trio.open_nursery() as nursery:
        manager = await start(nursery, ca)
        async with trio.open_nursery() as waiters:
            for i in range(20):
                identity = SpiffeId("cluster.local", "ns", f"s{i}")
                waiters.start_soon(manager.wait_credentials, identity)
        stats = manager.statistics()
        nursery.cancel_scope.cancel()
    assert ca.max_in_flight == 8
    assert (stats.identities, stats.valid, stats.fetches_succeeded) == (20, 20, 20)
    assert stats.in_flight == 0


async def test_wait_without_run_is_a_usage_error() -> None:
    """Asking before run() started is our bug, reported as such."""
    manager = CertificateManager(TestCa(), clock=clock)
    with pytest.raises(RuntimeError, match="run"):
        await manager.wait_credentials(ALICE)
