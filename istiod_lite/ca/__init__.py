"""The certificate authority of the control plane (Istio's `IstioCertificateService`).

Modules: `authority` (signing, lifetimes), `roots` (where the root comes from), `authz` (caller
authentication seam and the issuing decision), `service` (the grpclib service), `server` (TLS
serving on 15012). See docs/ca.md.
"""
