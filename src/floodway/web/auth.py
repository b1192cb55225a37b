"""Who is asking: a bearer token (or the dashboard's cookie holding the same token) resolved to
a ``Principal`` — one tenant, or admin.

Every route but ``/healthz`` (and the login page with its static files) needs a live token:
``Authorization: Bearer fw_...``. The dashboard's login form checks a token and keeps it in a
cookie (``HttpOnly``, ``SameSite=Strict``) so the page's scripts never see it; requests
authenticated by that cookie that change something must also send ``X-Requested-With`` (which a
cross-site form cannot), on top of SameSite; the login form itself carries an anti-forgery
value (see ``dashboard.login_forged``). Tokens are looked up on every request, so a revoked
token stops working at once, and each request spends one token of the store limit
``floodway.api`` keyed by the token's id (``api_rate``/``api_burst``): past it, 429 with
``Retry-After``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import ConfigError
from ..limits import LimitSpec
from ..tokens import authenticate

if TYPE_CHECKING:
    from ..app import App
    from ..jobs import Job

COOKIE = "floodway_token"
COOKIE_MAX_AGE = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: the store limit that rate-limits requests, one key per token
API_LIMIT = "floodway.api"


class ApiError(Exception):
    """An error answered as JSON ``{"error": message}`` with ``status`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Principal:
    """The owner of a token: a tenant sees and touches only its own jobs; admin sees all."""

    token_id: str
    tenant: str | None
    admin: bool
    label: str | None = None
    via_cookie: bool = False

    def owns(self, job: "Job") -> bool:
        return self.admin or (self.tenant is not None and job.tenant == self.tenant)

    @property
    def scope(self) -> str:
        return "admin" if self.admin else f"tenant {self.tenant}"

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise ApiError(403, f"{what} needs an admin token; this token is bound to tenant {self.tenant!r}")


def token_from(request: Request) -> tuple[str | None, bool, bool]:
    """``(token, given, via_cookie)``: the bearer token, else the dashboard cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, True, False
        return value.strip(), True, False
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return cookie, True, True
    return None, False, False


async def principal_for(request: Request) -> Principal | None:
    """The principal of the request's token, or None when it has no live token."""
    cached = request.scope.get("floodway.principal")
    if cached is not None:
        return cached
    token, given, via_cookie = token_from(request)
    if not given or token is None:
        return None
    info = await run_in_threadpool(authenticate, request.app.state.floodway.store, token)
    if info is None:
        return None
    principal = Principal(info.id, info.tenant, info.admin, info.label, via_cookie)
    await spend(request, principal)
    request.scope["floodway.principal"] = principal
    return principal


# -- requests per token ---------------------------------------------------------------------------
def api_limit(rate: str | None, burst: int) -> LimitSpec | None:
    """The limit on requests per token (``None``: no limit), keyed by the token's id."""
    if rate is None:
        return None
    return LimitSpec.build(API_LIMIT, rate=rate, burst=burst, key="{token}")


def declare_api_limit(app: "App", spec: LimitSpec | None) -> None:
    if spec is not None:
        app.store.declare_limit(spec)


def _take(app: "App", spec: LimitSpec, token_id: str) -> tuple[bool, float]:
    try:
        return app.store.acquire(spec.name, token_id)
    except ConfigError:  # not declared yet (an app mounted without its lifespan)
        app.store.declare_limit(spec)
        return app.store.acquire(spec.name, token_id)


async def spend(request: Request, principal: Principal) -> None:
    """Take one request from the token's budget (the store's GCRA limit, so every web process
    shares it); ``ApiError(429)`` with ``Retry-After`` when it is spent."""
    spec: LimitSpec | None = getattr(request.app.state, "api_limit", None)
    if spec is None:
        return
    admitted, retry_at = await run_in_threadpool(_take, request.app.state.floodway, spec, principal.token_id)
    if not admitted:
        wait = max(1, math.ceil(retry_at - time.time()))
        raise ApiError(
            429,
            f"too many requests for this token (limit {spec.rate} per token, burst {spec.burst}); retry in {wait}s",
            {"Retry-After": str(wait)},
        )


async def require(request: Request) -> Principal:
    """The request's principal; ``ApiError(401)`` without a live token, ``ApiError(403)`` for a
    cookie-authenticated change without ``X-Requested-With``."""
    token, given, _ = token_from(request)
    principal = await principal_for(request)
    if principal is None:
        if not given:
            raise ApiError(
                401, "missing token: send 'Authorization: Bearer <token>' (create one with `floodway token create`)"
            )
        if token is None:
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <token>'")
        raise ApiError(401, "invalid or revoked token")
    if principal.via_cookie and request.method not in SAFE_METHODS and not request.headers.get("x-requested-with"):
        raise ApiError(403, "a change authenticated by the dashboard cookie must send the X-Requested-With header")
    return principal
