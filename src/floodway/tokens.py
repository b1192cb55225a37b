"""API tokens: ``fw_<id>_<secret>``, stored as a SHA-256 hash, bound to one tenant (who sees
and touches only that tenant's jobs, limits and flows) or admin (everything)."""

from __future__ import annotations

import hashlib
import secrets
import time

from .errors import ConfigError
from .inputs import check_name, check_tenant
from .store.base import AdminPort, TokenInfo

PREFIX = "fw_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    store: AdminPort, *, tenant: str | None = None, admin: bool = False, label: str | None = None
) -> tuple[str, TokenInfo]:
    """Create a token; returns the token (shown once, never stored) and its record."""
    if admin == (tenant is not None):
        raise ConfigError("a token is either bound to a tenant (tenant=...) or admin (admin=True)")
    if tenant is not None:
        check_tenant(tenant)
    if label is not None:
        check_name(label, "token label")
    token_id = secrets.token_hex(4)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(24)}"
    info = TokenInfo(token_id, tenant, admin, label, time.time())
    store.create_token(info, hash_token(token))
    return token, info


def authenticate(store: AdminPort, token: str | None) -> TokenInfo | None:
    """The live token ``token`` names, or None."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    return store.token_for(hash_token(token))
