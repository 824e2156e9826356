"""Where the CA's root comes from: a directory it creates on first start, files, or a Secret.

Called once at control-plane start-up (by whoever builds the `CertificateAuthority`). Three
sources, each returning a validated `meshcore.pki.Issuer`:

- `load_or_create_root(directory)`: `root-cert.pem` + `root-key.pem` in a directory; both
  absent → a new 10-year self-signed root is written there (key mode 0600, written atomically);
  one present without the other → error (we never overwrite half a root).
- `load_root_files(cert_path, key_path)`: explicit files (for example a mounted Secret).
- `root_from_secret_data(data)`: the `data` map of a Kubernetes Secret in the layout of Istio's
  `cacerts` / `istio-ca-secret` (`ca-cert.pem`, `ca-key.pem`, base64 as the API returns them).
  Pure: the caller fetched the Secret.

Invariant of every returned root: a CA certificate (basicConstraints CA), self-signed, currently
valid, and matching its ECDSA key. Intermediate CAs (a `cacerts` Secret whose `root-cert.pem`
differs from `ca-cert.pem`) are not supported yet and are refused with a message saying so.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from istiod_lite.ca.authority import ROOT_LIFETIME, utc_now
from istiod_lite.errors import CaConfigError
from meshcore import pki

ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
SECRET_CERT_KEY = "ca-cert.pem"
SECRET_KEY_KEY = "ca-key.pem"
SECRET_ROOT_KEY = "root-cert.pem"


def load_or_create_root(
    directory: Path, *, trust_domain: str, now: dt.datetime | None = None
) -> pki.Issuer:
    """Load the root kept in `directory`, creating and persisting one if there is none."""
    now = now or utc_now()
    cert_path, key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
    if cert_path.exists() or key_path.exists():
        return load_root_files(cert_path, key_path, now=now)
    directory.mkdir(parents=True, exist_ok=True)
    root = pki.new_root(trust_domain, lifetime=ROOT_LIFETIME, now=now)
    # Key first: a crash in between leaves "key without cert", which load refuses loudly.
    _write_atomically(key_path, pki.private_key_pem(root.key), mode=0o600)
    _write_atomically(cert_path, pki.cert_pem(root.certificate), mode=0o644)
    return root


def load_root_files(
    cert_path: Path, key_path: Path, *, now: dt.datetime | None = None
) -> pki.Issuer:
    """Load and validate a root certificate and its key from two PEM files."""
    missing = [str(p) for p in (cert_path, key_path) if not p.exists()]
    if missing:
        raise CaConfigError(
            f"CA root incomplete: {', '.join(missing)} missing; restore the file or remove "
            f"both {cert_path.name} and {key_path.name} to create a new root"
        )
    return root_from_pem(
        cert_path.read_bytes(), key_path.read_bytes(), source=str(cert_path.parent), now=now
    )


def root_from_secret_data(
    data: Mapping[str, str | bytes], *, source: str = "Secret", now: dt.datetime | None = None
) -> pki.Issuer:
    """Build the root from a Kubernetes Secret's `data` (base64 values, `cacerts` key names)."""
    decoded = {}
    for key in (SECRET_CERT_KEY, SECRET_KEY_KEY):
        if key not in data:
            raise CaConfigError(f"{source} has no {key!r} key; it needs ca-cert.pem and ca-key.pem")
        decoded[key] = _b64(data[key], f"{source} key {key!r}")
    root = root_from_pem(decoded[SECRET_CERT_KEY], decoded[SECRET_KEY_KEY], source=source, now=now)
    if SECRET_ROOT_KEY in data:
        declared = pki.load_pem_chain(_b64(data[SECRET_ROOT_KEY], f"{source} {SECRET_ROOT_KEY}"))
        if declared != [root.certificate]:
            raise CaConfigError(
                f"{source}: root-cert.pem differs from ca-cert.pem, i.e. an intermediate CA; "
                "only a self-signed ca-cert.pem is supported yet"
            )
    return root


def root_from_pem(
    cert_pem: bytes, key_pem: bytes, *, source: str, now: dt.datetime | None = None
) -> pki.Issuer:
    """Parse and validate a root (see the module invariant); errors name `source`."""
    now = now or utc_now()
    try:
        certs = pki.load_pem_chain(cert_pem)
        key = pki.load_private_key_pem(key_pem)
    except (pki.PkiError, ValueError, TypeError) as exc:
        raise CaConfigError(f"CA root in {source} is unreadable: {exc}") from exc
    if len(certs) != 1:
        raise CaConfigError(f"CA root in {source} must hold one certificate, found {len(certs)}")
    cert = certs[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaConfigError(f"certificate in {source} is not a CA certificate (basicConstraints)")
    if cert.public_key() != key.public_key():
        raise CaConfigError(f"CA key in {source} does not belong to its certificate")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaConfigError(
            f"certificate in {source} is not self-signed ({exc}); intermediate CAs are not "
            "supported yet"
        ) from exc
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CaConfigError(
            f"CA root in {source} is not valid now (valid {cert.not_valid_before_utc} to "
            f"{cert.not_valid_after_utc}); rotate the root"
        )
    return pki.Issuer(cert, key)


def _b64(value: str | bytes, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CaConfigError(f"{what} is not base64 (Secret data must be base64): {exc}") from exc


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask; be explicit
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
