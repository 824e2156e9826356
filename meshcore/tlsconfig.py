"""TLS settings for HBONE: SSLContext builders and the post-handshake identity checks.

Who calls it: the trio HBONE adapters (`meshcore.hbone_trio.client` / `.server`) build contexts
from a `WorkloadCredentials` through a `TlsContextCache`, wrap sockets with them
(`meshcore.hbone_trio.tls_stream`) and, once the handshake is done, call `check_negotiated`
plus `verify_server_identity` (client side) or `verify_client_identity` (server side).

What the contexts enforce (ztunnel's settings, AMBIENT-INTERNALS §2.2):
- TLS 1.3 only; ALPN exactly `h2`; mutual authentication with the chain verified against the
  mesh roots (the CA's trust bundle, given as PEM `cadata`); hostname checking off because
  identities are SPIFFE URI SANs, not DNS names; the client sends no SNI (callers pass
  `server_hostname=None`); no session tickets or resumption (`OP_NO_TICKET`, `num_tickets = 0`).
- Cipher suites: REFERENCE §2 wants `TLS_AES_256_GCM_SHA384` and `TLS_AES_128_GCM_SHA256` only.
  Python's `ssl` has no `set_ciphersuites` (`set_ciphers` only governs TLS <= 1.2), so we
  (1) call OpenSSL's `SSL_CTX_set_ciphersuites` on the context through ctypes, after checking
  that the pointer we found really is that context's `SSL_CTX` (its options must read back equal
  to `ctx.options`) and then confirming the result with `ctx.get_ciphers()`; if any step is not
  possible the context keeps OpenSSL's default list; and (2) independently of (1), every
  handshake is checked by `check_negotiated`, which refuses a connection whose negotiated suite
  is not AES-GCM. (1) makes our ClientHello and server choice match ztunnel's on the wire;
  (2) is the guarantee that never depends on interpreter internals.

Invariants: everything here is pure apart from building an SSLContext (which needs the PEMs in
a file-like path; we use an anonymous memfd, so nothing touches disk). No sockets, no trio.
"""

from __future__ import annotations

import _ssl
import ctypes
import dataclasses
import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Collection, Iterable
from typing import Any

from cryptography import x509

from meshcore import pki
from meshcore.errors import MeshCoreError
from meshcore.identity import SpiffeId

HBONE_ALPN = "h2"
# AES-128 first: on these machines it encrypts ~30% faster than AES-256 and both are allowed.
ALLOWED_TLS13_SUITES: tuple[str, ...] = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384")


class TlsConfigError(MeshCoreError):
    """Our own credentials or settings are unusable (our fault: fix the certificate or key)."""


class PeerRejectedError(MeshCoreError):
    """The peer completed a TLS handshake but is not acceptable (its fault or a config mismatch)."""


class PeerIdentityError(PeerRejectedError):
    """The peer's certificate does not carry an identity we accept.

    `found` lists the SPIFFE IDs in the peer leaf; `expected` what we would have accepted
    (for the server side: any identity in `expected_trust_domain`).
    """

    def __init__(
        self,
        message: str,
        *,
        found: tuple[SpiffeId, ...],
        expected: tuple[SpiffeId, ...] = (),
        expected_trust_domain: str | None = None,
    ) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected
        self.expected_trust_domain = expected_trust_domain


class NegotiationError(PeerRejectedError):
    """The handshake settled on a protocol version, ALPN or cipher suite HBONE does not allow."""


@dataclasses.dataclass(frozen=True)
class WorkloadCredentials:
    """One identity's certificate material, as the CA returned it.

    `chain_pem` is leaf first then intermediates; `roots_pem` is the trust bundle peers are
    verified against; `not_after` is the leaf's expiry (UTC).
    """

    identity: SpiffeId
    chain_pem: bytes
    key_pem: bytes = dataclasses.field(repr=False)
    roots_pem: bytes
    not_after: dt.datetime

    @classmethod
    def from_pem(cls, chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> WorkloadCredentials:
        """Build from PEMs, reading identity and expiry from the leaf.

        Raises TlsConfigError if the chain is empty, the key is not ECDSA P-256, or the leaf has
        no SPIFFE identity.
        """
        try:
            chain = pki.load_pem_chain(chain_pem)
        except pki.PkiError as exc:
            raise TlsConfigError(f"workload chain is not PEM: {exc}") from exc
        if not chain:
            raise TlsConfigError("workload chain PEM holds no certificate")
        try:
            key = pki.load_private_key_pem(key_pem)
        except (pki.PkiError, ValueError, TypeError) as exc:
            raise TlsConfigError(f"workload key is not a PEM ECDSA key: {exc}") from exc
        if key.curve.name != "secp256r1":
            raise TlsConfigError(f"workload key is on {key.curve.name}; HBONE uses P-256")
        ids = pki.spiffe_ids_of(chain[0])
        if not ids:
            raise TlsConfigError(
                f"workload leaf {chain[0].subject.rfc4514_string()!r} has no SPIFFE URI SAN"
            )
        return cls(ids[0], chain_pem, key_pem, roots_pem, chain[0].not_valid_after_utc)


###############################################################################
# Context builders


def client_context(creds: WorkloadCredentials) -> ssl.SSLContext:
    """An SSLContext for dialing HBONE peers as `creds.identity` (no SNI: server_hostname=None)."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, creds)


def server_context(creds: WorkloadCredentials) -> ssl.SSLContext:
    """An SSLContext for accepting HBONE as `creds.identity`; a client certificate is required."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, creds)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = 0
    return ctx


def _base_context(protocol: ssl._SSLMethod, creds: WorkloadCredentials) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols([HBONE_ALPN])
    try:
        ctx.load_verify_locations(cadata=creds.roots_pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise TlsConfigError(f"trust roots for {creds.identity} are unusable: {exc}") from exc
    _load_chain_in_memory(ctx, creds)
    restrict_tls13_suites(ctx, ALLOWED_TLS13_SUITES)
    return ctx


def _load_chain_in_memory(ctx: ssl.SSLContext, creds: WorkloadCredentials) -> None:
    # ssl can only load a certificate chain from a path. An anonymous memfd keeps key material
    # off disk; elsewhere fall back to a private temporary file deleted at once.
    pem = creds.chain_pem.rstrip(b"\n") + b"\n" + creds.key_pem
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hbone-cred", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            _load_chain(ctx, f"/proc/self/fd/{fd}", creds)
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as f:  # pragma: no cover - non-Linux
        f.write(pem)
        f.flush()
        _load_chain(ctx, f.name, creds)


def _load_chain(ctx: ssl.SSLContext, path: str, creds: WorkloadCredentials) -> None:
    try:
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"certificate chain or key for {creds.identity} is unusable (does the key match"
            f" the leaf?): {exc}"
        ) from exc


def restrict_tls13_suites(ctx: ssl.SSLContext, suites: Iterable[str]) -> bool:
    """Limit the TLS 1.3 suites a context offers/accepts; True if it took effect.

    Uses OpenSSL's SSL_CTX_set_ciphersuites through ctypes (see the module docstring); returns
    False and leaves the context unchanged when that is not possible on this interpreter.
    """
    wanted = list(suites)
    fn = _set_ciphersuites_fn()
    if fn is None:
        return False
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    get_options = _get_options_fn()
    if not ptr or get_options is None or get_options(ptr) != ctx.options:
        return False
    if fn(ptr, ":".join(wanted).encode("ascii")) != 1:
        return False
    offered = [c["name"] for c in ctx.get_ciphers() if c.get("protocol") == "TLSv1.3"]
    return offered == wanted


_LIBSSL: ctypes.CDLL | None = None


def _libssl() -> ctypes.CDLL | None:
    global _LIBSSL
    if _LIBSSL is None:
        try:
            # dlsym on the _ssl extension also searches libssl, which it links against.
            _LIBSSL = ctypes.CDLL(_ssl.__file__)
        except (OSError, AttributeError):
            return None
    return _LIBSSL


def _set_ciphersuites_fn() -> Any:
    lib = _libssl()
    fn = getattr(lib, "SSL_CTX_set_ciphersuites", None) if lib is not None else None
    if fn is None or _get_options_fn() is None:
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    return fn


def _get_options_fn() -> Any:
    lib = _libssl()
    fn = getattr(lib, "SSL_CTX_get_options", None) if lib is not None else None
    if fn is not None:
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_uint64
    return fn


class TlsContextCache:
    """SSLContexts per identity, rebuilt when that identity's credentials change.

    Building a context parses PEMs and keys (~1 ms); connections reuse the cached one.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[SpiffeId, bool], tuple[WorkloadCredentials, ssl.SSLContext]] = {}

    def client(self, creds: WorkloadCredentials) -> ssl.SSLContext:
        return self._get(creds, server=False)

    def server(self, creds: WorkloadCredentials) -> ssl.SSLContext:
        return self._get(creds, server=True)

    def forget(self, identity: SpiffeId) -> None:
        self._entries.pop((identity, False), None)
        self._entries.pop((identity, True), None)

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, creds: WorkloadCredentials, *, server: bool) -> ssl.SSLContext:
        key = (creds.identity, server)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == creds:
            return hit[1]
        ctx = server_context(creds) if server else client_context(creds)
        self._entries[key] = (creds, ctx)
        return ctx


###############################################################################
# Post-handshake checks (pure)


def check_negotiated(version: str | None, alpn: str | None, cipher: str | None) -> None:
    """Refuse a finished handshake that is not TLS 1.3 + h2 + an allowed AES-GCM suite."""
    if version != "TLSv1.3":
        raise NegotiationError(f"peer negotiated {version}; HBONE requires TLSv1.3")
    if alpn != HBONE_ALPN:
        raise NegotiationError(f"peer negotiated ALPN {alpn!r}; HBONE requires {HBONE_ALPN!r}")
    if cipher not in ALLOWED_TLS13_SUITES:
        raise NegotiationError(
            f"peer negotiated cipher suite {cipher}; allowed: {', '.join(ALLOWED_TLS13_SUITES)}"
        )


def verify_server_identity(leaf_der: bytes | None, expected: Collection[SpiffeId]) -> SpiffeId:
    """Client side: the server leaf's SPIFFE ID must equal one of `expected`; returns it."""
    found = _ids_of(leaf_der)
    want = tuple(sorted(expected))
    for identity in found:
        if identity in expected:
            return identity
    raise PeerIdentityError(
        f"server presented identity {_names(found)}, expected {_names(want)}",
        found=found,
        expected=want,
    )


def verify_client_identity(leaf_der: bytes | None, trust_domain: str) -> SpiffeId:
    """Server side: the client leaf must carry a SPIFFE ID in our trust domain; returns it."""
    found = _ids_of(leaf_der)
    for identity in found:
        if identity.trust_domain == trust_domain:
            return identity
    raise PeerIdentityError(
        f"client presented identity {_names(found)}, expected one in trust domain"
        f" {trust_domain!r}",
        found=found,
        expected_trust_domain=trust_domain,
    )


def _ids_of(leaf_der: bytes | None) -> tuple[SpiffeId, ...]:
    if not leaf_der:
        return ()
    try:
        cert = x509.load_der_x509_certificate(leaf_der)
    except ValueError:
        return ()
    return tuple(pki.spiffe_ids_of(cert))


def _names(ids: tuple[SpiffeId, ...]) -> str:
    return ", ".join(str(i) for i in ids) if ids else "<none>"
