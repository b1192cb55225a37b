"""The live dashboard: server-rendered Jinja2 pages whose live parts are HTML fragments
(``/ui/...``) that a small hand-written script, ``static/app.js``, swaps in on a timer or when a
Server-Sent Event arrives.

Why not htmx: the run-time has no network, so it would have to be vendored (about 50 KB of
third-party code to keep up to date) and its SSE support is a separate extension; the chart
needs a script of our own anyway. ``app.js`` does the three things the pages need — refresh a
fragment (``data-src`` + ``data-poll`` or ``data-refresh-on``), post an action button
(``data-action``), and draw the throughput chart from ``/api/stream`` — in about 250 lines,
with ``fetch`` and ``EventSource`` only.

Logging in: the form takes a token (``floodway token create ...``), checks it, and keeps it in a
cookie (``HttpOnly``, ``SameSite=Strict``): the page's scripts never read it, and the same
API routes accept it (changes also need ``X-Requested-With``, which ``app.js`` sends). The form
itself carries an anti-forgery value that must match a cookie set with it, so a page on another
site cannot log a visitor in with a token of its choosing (login CSRF).

No inline scripts or styles (the Content-Security-Policy forbids them): bar widths are
``data-width`` percentages that ``app.js`` applies.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import FloodwayError, JobNotFound
from ..forecast import format_eta
from ..inputs import LONE_SURROGATES
from ..jobs import Status
from ..store.rules import cancel_action, check_retryable
from ..tokens import authenticate
from . import data, forecast_api
from .api import MAX_OFFSET, ApiError
from .auth import COOKIE, COOKIE_MAX_AGE, Principal, principal_for
from .wire import parse_statuses, read_body

if TYPE_CHECKING:
    from ..app import App

TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZE = 50
#: the login form's anti-forgery cookie, and how long a login form stays usable
LOGIN_COOKIE = "floodway_login"
LOGIN_MAX_AGE = 3600


def _allowed(rule: Any, status: Status) -> bool:
    """Whether the store's ``rule`` lets a job in ``status`` through (it raises when not)."""
    try:
        rule("job", status) if rule is check_retryable else rule(status)
    except FloodwayError:
        return False
    return True


#: the statuses, and which of them the action buttons and the live totals act on: all from
#: ``floodway.jobs`` and the store's rules, never listed again here or in the templates
STATUS_NAMES = data.STATUS_NAMES
FINAL_NAMES = [s.value for s in Status if s.is_final]
RETRYABLE_NAMES = [s.value for s in Status if _allowed(check_retryable, s)]
CANCELLABLE_NAMES = [s.value for s in Status if _allowed(cancel_action, s) and s is not Status.CANCELLED]


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def ago(value: Any) -> str:
    """``3.2s ago`` / ``in 5s`` for an epoch or ISO instant."""
    ts = _epoch(value)
    if ts is None:
        return ""
    delta = time.time() - ts
    span = abs(delta)
    if span < 0.5:
        return "just now"
    if span < 10:
        text = f"{span:.1f}s"
    elif span < 120:
        text = f"{span:.0f}s"
    elif span < 7200:
        text = f"{span / 60:.0f}m"
    elif span < 172800:
        text = f"{span / 3600:.0f}h"
    else:
        text = f"{span / 86400:.0f}d"
    return f"{text} ago" if delta >= 0 else f"in {text}"


def clock(value: Any) -> str:
    ts = _epoch(value)
    if ts is None:
        return ""
    try:
        return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):  # an instant at the edge of what dates can show
        return str(value)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def quote(value: Any) -> str:
    return urllib.parse.quote(str(value), safe="")


def error_line(error: Any, width: int = 140) -> str:
    if not error:
        return ""
    message = str(error.get("message") or "").strip().splitlines()
    text = f"{error.get('type') or 'Error'}: {message[0] if message else ''}".rstrip(": ")
    return text if len(text) <= width else text[: width - 1] + "…"


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(ago=ago, clock=clock, pretty=pretty, quote=quote, error_line=error_line, duration=format_eta)
env.globals.update(
    STATUS_NAMES=STATUS_NAMES,
    FINAL_NAMES=FINAL_NAMES,
    RETRYABLE_NAMES=RETRYABLE_NAMES,
    CANCELLABLE_NAMES=CANCELLABLE_NAMES,
)


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(name).render(**context)
    # no stored value may break a page: what cannot be sent shows as U+FFFD
    # (lone surrogates are refused on the way in, but a row written by an older version, or by
    # hand, may hold them)
    html = LONE_SURROGATES.sub("\ufffd", html)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def fw(request: Request) -> "App":
    return request.app.state.floodway


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(fn, *args, **kwargs)


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


async def page_principal(request: Request) -> Principal | None:
    return await principal_for(request)


def base_context(request: Request, principal: Principal, **extra: Any) -> dict[str, Any]:
    return {"request": request, "me": principal, "path": request.url.path, **extra}


# -- login ---------------------------------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


def login_page(request: Request, *, status: int = 200, next: str = "/", error: str | None = None) -> Response:
    """The login form, with a fresh anti-forgery value in a hidden field and in a cookie that
    only this site's own pages carry back (``SameSite=Strict``, path ``/login``)."""
    secret = secrets.token_urlsafe(24)
    response = render("login.html", status=status, next=next, error=error, csrf=secret)
    response.set_cookie(
        LOGIN_COOKIE,
        secret,
        max_age=LOGIN_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


def login_forged(request: Request, fields: dict[str, list[str]]) -> bool:
    """Whether a login post did not come from our own login form: a browser says it came from
    another site, or the form's anti-forgery value does not match its cookie (a page elsewhere
    can neither read that cookie nor make the browser send it)."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    sent = (fields.get("csrf") or [""])[0]
    kept = request.cookies.get(LOGIN_COOKIE) or ""
    return not sent or not kept or not hmac.compare_digest(sent.encode(), kept.encode())


async def login_form(request: Request) -> Response:
    if await page_principal(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return login_page(request, next=_safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    try:
        body = await read_body(request)
    except ApiError as exc:
        return login_page(request, status=exc.status, error=exc.message)
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    target = _safe_next((fields.get("next") or ["/"])[0])
    if login_forged(request, fields):
        return login_page(
            request,
            status=403,
            next=target,
            error="This login did not come from this site's login form (or the form expired). Try again.",
        )
    token = (fields.get("token") or [""])[0].strip()
    info = await call(authenticate, fw(request).store, token) if token else None
    if info is None:
        message = "Enter a token." if not token else "That token is not valid (or it was revoked)."
        return login_page(request, status=401, next=target, error=message)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login", httponly=True, samesite="strict")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# -- pages ---------------------------------------------------------------------------------------
async def overview(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return to_login(request)
    tasks = data.tasks_view(fw(request))["tasks"]  # the app's declarations: no store read
    return render("overview.html", **base_context(request, principal, title="Overview", tasks=tasks))


def _job_filters(request: Request, principal: Principal) -> dict[str, Any]:
    q = request.query_params
    try:
        statuses = parse_statuses(q.getlist("status"))
    except ApiError:
        statuses = None
    try:
        offset = max(0, int(q.get("offset") or 0))
    except ValueError:
        offset = 0
    if offset > MAX_OFFSET:
        raise ApiError(400, f"offset must be at most {MAX_OFFSET}")
    filters = {
        "status": statuses[0] if statuses else "",
        "queue": q.get("queue") or "",
        "task": q.get("task") or "",
        "tenant": q.get("tenant") or "",
        "text": (q.get("text") or "")[:255],
        "offset": offset,
    }
    if not principal.admin:
        filters["tenant"] = ""
    return filters


def _query(filters: dict[str, Any], **changes: Any) -> str:
    merged = {**filters, **changes}
    return urllib.parse.urlencode({k: v for k, v in merged.items() if v not in ("", None, 0)})


async def jobs_page(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return to_login(request)
    search = (request.query_params.get("id") or "").strip()
    missing = None
    if search:
        app = fw(request)
        for candidate in dict.fromkeys([search, f"{principal.tenant}:{search}" if principal.tenant else search]):
            try:
                await call(data.visible_job, app, principal, candidate)
            except JobNotFound:
                continue
            return RedirectResponse(f"/jobs/{quote(candidate)}", status_code=303)
        missing = search
    try:
        filters = _job_filters(request, principal)
    except ApiError as exc:
        return HTMLResponse(f'<p class="empty">{exc.message}</p>', status_code=exc.status)
    return render(
        "jobs.html",
        **base_context(
            request,
            principal,
            title="Jobs",
            filters=filters,
            query=_query(filters),
            missing=missing,
            bulk_filter=json.dumps({k: filters[k] for k in ("status", "queue", "task", "tenant") if filters[k]}),
        ),
    )


async def job_page(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return to_login(request)
    job_id = request.path_params["job_id"]
    try:
        detail = await call(data.job_detail, fw(request), principal, job_id)
    except JobNotFound:
        return render("notfound.html", status=404, **base_context(request, principal, title="Not found", job_id=job_id))
    return render("job.html", **base_context(request, principal, title=f"Job {job_id}", d=detail, job_id=job_id))


# -- fragments -----------------------------------------------------------------------------------
async def fragment(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return HTMLResponse("", status_code=401)
    name = request.path_params["name"]
    app = fw(request)
    ctx = base_context(request, principal)
    if name == "queues":
        ctx.update(await call(data.queues_view, app, principal), etas=await call(forecast_api.etas, app, principal))
    elif name == "limits":
        ctx.update(await call(data.limits_view, app, principal), etas=await call(forecast_api.etas, app, principal))
    elif name == "workers":
        if not principal.admin:
            return HTMLResponse("", status_code=403)
        ctx.update(await call(data.workers_view, app))
    elif name == "schedules":
        ctx.update(await call(data.schedules_view, app, principal))
    elif name == "jobs":
        try:
            filters = _job_filters(request, principal)
        except ApiError as exc:
            return HTMLResponse(f'<p class="empty">{exc.message}</p>', status_code=exc.status)
        tenant = filters["tenant"] or None if principal.admin else principal.tenant
        found = await call(
            app.store.list_jobs,
            status=[filters["status"]] if filters["status"] else None,
            queue=filters["queue"] or None,
            task=filters["task"] or None,
            tenant=tenant,
            text=filters["text"] or None,
            limit=PAGE_SIZE + 1,
            offset=filters["offset"],
        )
        ctx.update(
            jobs=found[:PAGE_SIZE],
            more=len(found) > PAGE_SIZE,
            filters=filters,
            older=_query(filters, offset=filters["offset"] + PAGE_SIZE),
            newer=_query(filters, offset=max(0, filters["offset"] - PAGE_SIZE)),
        )
    else:
        return HTMLResponse("", status_code=404)
    return render(f"_{name}.html", **ctx)


async def job_fragment(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return HTMLResponse("", status_code=401)
    job_id = request.path_params["job_id"]
    try:
        detail = await call(data.job_detail, fw(request), principal, job_id)
    except JobNotFound:
        return HTMLResponse('<p class="empty">This job no longer exists.</p>', status_code=404)
    return render("_job.html", **base_context(request, principal, d=detail, job_id=job_id))


routes = [
    Route("/", overview, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/jobs", jobs_page, methods=["GET"]),
    Route("/jobs/{job_id:path}", job_page, methods=["GET"]),
    Route("/ui/job/{job_id:path}", job_fragment, methods=["GET"]),
    Route("/ui/{name:str}", fragment, methods=["GET"]),
]
