"""The certificate manager (trio): one cached, self-renewing certificate per SPIFFE identity.

Who calls it: the proxy (inbound/outbound) asks `await wait_credentials(identity)` before a TLS
handshake; the workload state calls `prefetch(identity)` when a local pod appears and
`forget(identity)` when the last pod with that identity goes. Hands out
`meshcore.tlsconfig.WorkloadCredentials` (identity, chain PEM, key PEM, roots PEM = the chain's
last element, not_after), which the TLS layer turns into contexts.

Behaviour (ztunnel's, AMBIENT-INTERNALS §3.5):
- Per identity one worker task (in the nursery of `run()`) makes a fresh ECDSA P-256 key and
  CSR, calls the injected `CaCall`, checks the answer (leaf identity and public key are ours,
  not expired), caches it, and sleeps until renewal: half of the lifetime counted from when the
  certificate arrived (or its notBefore if later), minus a random jitter of up to
  `jitter_fraction` of the lifetime, so a node's certificates do not renew in lock-step.
- A failed attempt is retried after 0.5 s, doubling up to 150 s; the old certificate is served
  meanwhile, until it expires. At most `max_concurrent` (8) CA calls run at once.

Invariants: callers never receive an expired certificate (checked against the clock at return);
concurrent waiters for an identity share one CA call (only the worker calls the CA). When no
valid certificate exists and an attempt fails, the waiters of that attempt get
`CertificateUnavailableError` naming the identity and the cause (for example the CA's
`CertificateRefusedError` with its reason); the worker keeps retrying with back-off and later
waiters wait for the next attempt. Time: the wall `clock` (injectable) judges validity; sleeps
are trio sleeps of the computed wall delta, so tests run in trio virtual time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

import trio

from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.tlsconfig import WorkloadCredentials
from meshcore.workload_identity.errors import CaResponseError, CertificateUnavailableError

log = logging.getLogger(__name__)

CaCall = Callable[[SpiffeId, bytes], Awaitable[Sequence[str]]]
"""`ca_call(identity, csr_pem) -> chain` (leaf first, root last); `CaClient.fetch_certificate`."""
Clock = Callable[[], dt.datetime]

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 150.0
MAX_CONCURRENT_FETCHES = 8


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class ManagerStatistics:
    """Identities tracked, how many hold a valid certificate, and CA call counters."""

    identities: int
    valid: int
    fetches_started: int
    fetches_succeeded: int
    fetches_failed: int
    in_flight: int


class _Outcome:
    """The result of one attempt, for the waiters that waited on it."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.error: BaseException | None = None


class _Entry:
    def __init__(self, identity: SpiffeId) -> None:
        self.identity = identity
        self.current: WorkloadCredentials | None = None
        self.next_outcome = _Outcome()
        self.failures = 0
        self.scope = trio.CancelScope()
        self.forgotten = False


class CertificateManager:
    """Keeps a valid certificate per identity in use; run it with `await nursery.start(m.run)`."""

    def __init__(
        self,
        ca_call: CaCall,
        *,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        jitter_fraction: float = 0.1,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        max_concurrent: int = MAX_CONCURRENT_FETCHES,
    ) -> None:
        self._ca_call = ca_call
        self._clock = clock
        self._rng = rng or random.Random()
        self._jitter_fraction = jitter_fraction
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._entries: dict[SpiffeId, _Entry] = {}
        self._nursery: trio.Nursery | None = None
        self._started = self._succeeded = self._failed = self._in_flight = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the workers; `started()` once ready. Cancel to stop every worker."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for identity in list(self._entries):
                self.forget(identity)  # releases waiters that outlive the manager

    async def wait_credentials(self, identity: SpiffeId) -> WorkloadCredentials:
        """A valid certificate for `identity`, fetching it first if needed.

        Raises CertificateUnavailableError when none is valid and the attempt waited on fails
        (its `cause` says why) or when the identity is forgotten meanwhile.
        """
        entry = self._ensure(identity)
        while True:
            creds = self._valid(entry)
            if creds is not None:
                await trio.lowlevel.checkpoint()
                return creds
            outcome = entry.next_outcome
            await outcome.event.wait()
            creds = self._valid(entry)
            if creds is not None:
                return creds
            if entry.forgotten:
                raise CertificateUnavailableError(
                    identity, "identity was forgotten (or the manager stopped) while waiting", None
                )
            if outcome.error is not None:
                raise CertificateUnavailableError(
                    identity, f"no valid certificate: {outcome.error}", outcome.error
                ) from outcome.error

    def credentials_nowait(self, identity: SpiffeId) -> WorkloadCredentials | None:
        """The cached certificate if it is valid now, else None (starts no fetch)."""
        entry = self._entries.get(identity)
        return None if entry is None else self._valid(entry)

    def prefetch(self, identity: SpiffeId) -> None:
        """Start keeping a certificate for `identity` (a pod with it appeared on this node)."""
        self._ensure(identity)

    def forget(self, identity: SpiffeId) -> None:
        """Stop keeping `identity`'s certificate (no local workload uses it any more)."""
        entry = self._entries.pop(identity, None)
        if entry is None:
            return
        entry.forgotten = True
        entry.scope.cancel()
        entry.next_outcome.event.set()

    def identities(self) -> frozenset[SpiffeId]:
        return frozenset(self._entries)

    def statistics(self) -> ManagerStatistics:
        valid = sum(1 for e in self._entries.values() if self._valid(e) is not None)
        return ManagerStatistics(
            identities=len(self._entries),
            valid=valid,
            fetches_started=self._started,
            fetches_succeeded=self._succeeded,
            fetches_failed=self._failed,
            in_flight=self._in_flight,
        )

    def _ensure(self, identity: SpiffeId) -> _Entry:
        entry = self._entries.get(identity)
        if entry is None:
            if self._nursery is None:
                raise RuntimeError("CertificateManager.run() must be running to fetch certificates")
            entry = self._entries[identity] = _Entry(identity)
            self._nursery.start_soon(self._maintain, entry, name=f"cert-manager {identity}")
        return entry

    def _valid(self, entry: _Entry) -> WorkloadCredentials | None:
        creds = entry.current
        if creds is not None and self._clock() < creds.not_after:
            return creds
        return None

    async def _maintain(self, entry: _Entry) -> None:
        with entry.scope:
            while True:
                try:
                    creds, renew_at = await self._fetch(entry.identity)
                except Exception as exc:  # every failure is retried, as ztunnel does
                    self._failed += 1
                    entry.failures += 1
                    delay = self._backoff(entry.failures)
                    log.warning(
                        "certificate for %s failed (attempt %d), retrying in %.1fs: %s",
                        entry.identity, entry.failures, delay, exc,
                    )
                    self._publish(entry, exc)
                    await trio.sleep(delay)
                    continue
                self._succeeded += 1
                entry.failures = 0
                entry.current = creds
                self._publish(entry, None)
                await trio.sleep(max(0.0, (renew_at - self._clock()).total_seconds()))

    async def _fetch(self, identity: SpiffeId) -> tuple[WorkloadCredentials, dt.datetime]:
        async with self._limiter:
            key = pki.new_private_key()
            csr = pki.build_csr(key, identity)
            self._started += 1
            self._in_flight += 1
            try:
                chain = list(await self._ca_call(identity, csr))
            finally:
                self._in_flight -= 1
        now = self._clock()
        if len(chain) < 2:
            raise CaResponseError(identity, f"CA returned {len(chain)} PEM element(s), want ≥ 2")
        try:
            leaf = pki.load_pem_chain(chain[0])[0]
        except (pki.PkiError, IndexError) as exc:
            raise CaResponseError(identity, f"CA returned an unreadable leaf: {exc}") from exc
        if pki.spiffe_ids_of(leaf)[:1] != [identity]:
            raise CaResponseError(identity, f"CA returned a leaf for {pki.spiffe_ids_of(leaf)}")
        if leaf.public_key() != key.public_key():
            raise CaResponseError(identity, "CA returned a leaf for a different public key")
        not_after = leaf.not_valid_after_utc
        if not_after <= now:
            raise CaResponseError(identity, f"CA returned a leaf that expired at {not_after}")
        creds = WorkloadCredentials(
            identity=identity,
            chain_pem="".join(_with_newline(p) for p in chain[:-1]).encode(),
            key_pem=pki.private_key_pem(key),
            roots_pem=_with_newline(chain[-1]).encode(),
            not_after=not_after,
        )
        start = max(leaf.not_valid_before_utc, now)
        lifetime = not_after - start
        renew_at = start + lifetime * (0.5 - self._jitter_fraction * self._rng.random())
        return creds, renew_at

    def _publish(self, entry: _Entry, error: BaseException | None) -> None:
        outcome, entry.next_outcome = entry.next_outcome, _Outcome()
        outcome.error = error
        outcome.event.set()

    def _backoff(self, failures: int) -> float:
        return min(self._initial_backoff * 2.0 ** (failures - 1), self._max_backoff)


def _with_newline(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"
