"""Small HTTP endpoints for proxies: admin (15000), metrics (15020), readiness (15021)."""

from meshcore.admin.http import AdminResponse, Route, serve_admin

__all__ = ["AdminResponse", "Route", "serve_admin"]
