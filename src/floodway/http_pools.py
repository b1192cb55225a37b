"""The connection pools ``ctx.http`` clients share: one per event loop (a worker) and set of
transport options, split into lanes of a few connections, kept alive between jobs and closed
when the worker stops."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Mapping

import httpx

from .errors import ConfigError

log = logging.getLogger("floodway.http")

_SSL_CONTEXT: Any = None


def _shared_ssl_context() -> Any:
    """One TLS context per process: building one loads the CA bundle (tens of ms of CPU), which
    would otherwise happen for every client, on the worker's event loop."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


#: the options that shape a connection pool (the transport's); the others are the client's
TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "http1", "http2", "limits", "proxy")


def _option_key(value: Any) -> Any:
    """A hashable stand-in for one transport option, or raise TypeError (not shareable)."""
    if isinstance(value, httpx.Limits):
        return ("limits", value.max_connections, value.max_keepalive_connections, value.keepalive_expiry)
    if isinstance(value, httpx.Proxy):
        return ("proxy", str(value.url), value.raw_auth, tuple(value.headers.raw), value.ssl_context)
    hash(value)
    return value


def pool_key(options: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What tells one pool from another: equal options share a pool; None when an option
    cannot be compared (that client gets a pool of its own, closed with it)."""
    try:
        return tuple((name, _option_key(options[name])) for name in sorted(options))
    except TypeError:
        return None


#: connections per lane of a shared pool: httpcore looks at every connection of its pool (a
#: readiness poll of each socket) on every request, so a pool is split into small lanes
LANE_SIZE = 4
#: the pools' limits unless a client passes its own: an idle connection is dropped after 4 s,
#: under the 5 s after which common servers (uvicorn, Node) close it. At httpx's default of 5 s
#: a request could go out on a connection the server was closing just then, and a POST sent
#: into that race fails with "connection reset by peer"
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=None, keepalive_expiry=4.0)


class _Release(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A response body that tells its lane when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], None]):
        self.stream = stream
        self.release = release

    def __iter__(self) -> Any:
        yield from self.stream

    async def __aiter__(self) -> Any:
        async for chunk in self.stream:
            yield chunk

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.release()

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.release()


class _SharedPool(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """One shared connection pool: lanes of ``LANE_SIZE`` connections (httpx transports built
    with the same options), each request sent on the least busy lane, a new lane opened while
    every lane is full, up to ``limits.max_connections`` connections in all. Idle connections
    stay open (keep-alive) for the next job."""

    def __init__(self, sync: bool, options: dict[str, Any]):
        self.sync = sync
        self.options = dict(options)
        limits = self.options.pop("limits", None) or DEFAULT_LIMITS
        self.total = max(1, limits.max_connections or 100)
        self.keepalive = limits.max_keepalive_connections
        self.keepalive_expiry = limits.keepalive_expiry
        self.lock = threading.Lock()
        self.lanes: list[Any] = []
        self.sizes: list[int] = []
        self.busy: list[int] = []
        self._new_lane()

    def _new_lane(self) -> int:
        """Open a lane: ``LANE_SIZE`` connections, the last one what is left of the total."""
        size = min(LANE_SIZE, self.total - sum(self.sizes))
        limits = httpx.Limits(
            max_connections=size,
            keepalive_expiry=self.keepalive_expiry,
            max_keepalive_connections=size if self.keepalive is None else min(size, self.keepalive),
        )
        factory = httpx.HTTPTransport if self.sync else httpx.AsyncHTTPTransport
        self.lanes.append(factory(limits=limits, **self.options))
        self.sizes.append(size)
        self.busy.append(0)
        return len(self.lanes) - 1

    def _take(self) -> int:
        """The lane for the next request: the first with a free connection, in order, so the
        first lanes' kept-alive connections are reused before another lane opens one (the pool
        opens no more connections than requests were in flight at once); a new lane when all
        are full; past the total, the least busy lane (the request queues there)."""
        with self.lock:
            lane = next((i for i, busy in enumerate(self.busy) if busy < self.sizes[i]), None)
            if lane is None:
                if sum(self.sizes) < self.total:
                    lane = self._new_lane()
                else:
                    lane = min(range(len(self.lanes)), key=self.busy.__getitem__)
            self.busy[lane] += 1
            return lane

    def _releaser(self, lane: int) -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            with self.lock:
                if not done:
                    done = True
                    self.busy[lane] -= 1

        return release

    def _wrap(self, response: httpx.Response, release: Callable[[], None]) -> httpx.Response:
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Release(response.stream, release),
            extensions=response.extensions,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lane = self._take()
        release = self._releaser(lane)
        try:
            response = await self.lanes[lane].handle_async_request(request)
        except BaseException:
            release()
            raise
        return self._wrap(response, release)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        lane = self._take()
        release = self._releaser(lane)
        try:
            response = self.lanes[lane].handle_request(request)
        except BaseException:
            release()
            raise
        return self._wrap(response, release)

    async def aclose(self) -> None:
        for lane in self.lanes:
            await lane.aclose()

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()


class _Pools:
    """The connection pools of one event loop (a worker): one ``_SharedPool`` per distinct set
    of transport options, async for ``ctx.http`` and sync (thread-safe) for ``ctx.http_sync``,
    shared by every job so connections are kept alive between jobs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.async_: dict[tuple[Any, ...], Any] = {}
        self.sync: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], sync: bool, options: dict[str, Any], kind: str = "httpx") -> Any:
        pools = self.sync if sync else self.async_
        with self.lock:
            pool = pools.get((kind, *key))
            if pool is None:
                if kind == "aiohttp":
                    pool = pools[(kind, *key)] = _aiohttp_transport(options)
                else:
                    pool = pools[(kind, *key)] = _SharedPool(sync, _transport_options(options))
            return pool


#: event loop -> its pools (``None``: sync clients made outside a worker's loop)
_POOLS: dict[Any, _Pools] = {}
_POOLS_LOCK = threading.Lock()


def pools_for(loop: Any) -> _Pools:
    with _POOLS_LOCK:
        for other in [o for o in _POOLS if o is not None and o.is_closed()]:
            del _POOLS[other]  # a loop that ended without close_pools: its pools died with it
        pools = _POOLS.get(loop)
        if pools is None:
            pools = _POOLS[loop] = _Pools()
        return pools


def _transport_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as httpx takes them: the process's TLS context by default; HTTP/2 only
    with its package (not a dependency of floodway)."""
    options = dict(options)
    if options.get("verify") is None:
        options["verify"] = _shared_ssl_context()
    if options.get("http2"):
        try:
            import h2  # noqa: F401
        except ImportError:
            raise ConfigError("ctx.http: http2=True needs the 'h2' package (pip install 'httpx[http2]')") from None
    return options


def new_transport(sync: bool, options: dict[str, Any], kind: str = "httpx") -> Any:
    """A transport of one client's own (options that cannot be shared)."""
    if kind == "aiohttp" and not sync:
        return _aiohttp_transport(options)
    options = _transport_options(options)
    return httpx.HTTPTransport(**options) if sync else httpx.AsyncHTTPTransport(**options)


def transport_kind(preferred: str, sync: bool, options: Mapping[str, Any]) -> str:
    """The transport a client gets: the preferred one (the app's ``http_transport``), except
    httpx's own for a sync client or HTTP/2, which aiohttp does not speak."""
    if preferred == "aiohttp" and not sync and not options.get("http2"):
        return "aiohttp"
    return "httpx"


def _aiohttp_transport(options: dict[str, Any]) -> Any:
    """httpx's transport API over one aiohttp connection pool (``httpx-aiohttp``): aiohttp keeps
    its connections alive and parses HTTP/1.1 in C, so it needs no lanes, and a request costs
    a fraction of the CPU httpx's own transport spends on it."""
    from httpx_aiohttp import AiohttpTransport

    options = dict(options)
    options.pop("http1", None)
    options.pop("http2", None)
    if options.get("verify") is None:
        options["verify"] = _shared_ssl_context()
    options.setdefault("limits", DEFAULT_LIMITS)
    return AiohttpTransport(**options)


def prepare(kind: str) -> None:
    """What a worker's first ``ctx.http`` would otherwise do on its event loop, done before the
    worker claims a job (on a thread): the process's TLS context, and the import of aiohttp's
    transport (a tenth of a second). A stall of the loop there would hold back the first jobs,
    and jobs booked ahead keep their bookings' spacing after a stall (``worker_pacing``), so
    every request would go out that much later than its token for seconds after: a quota that
    falls meanwhile is followed late (a refusal reaches the learned rate only once the requests
    admitted since the cut come back; see ``quota``'s deep cut)."""
    _shared_ssl_context()
    if kind == "aiohttp":
        import httpx_aiohttp  # noqa: F401


async def close_pools() -> None:
    """Close the connection pools of the running event loop (a worker stopping): its kept-alive
    connections are closed cleanly. A later ``ctx.http`` on the loop opens new ones."""
    loop = asyncio.get_running_loop()
    with _POOLS_LOCK:
        pools = _POOLS.pop(loop, None)
    if pools is None:
        return
    with pools.lock:
        async_: list[Any] = list(pools.async_.values())
        sync: list[Any] = list(pools.sync.values())
        pools.async_.clear()
        pools.sync.clear()
    for transport in async_:
        try:
            await transport.aclose()
        except Exception as exc:  # a pool that cannot close cleanly must not stop the shutdown
            log.warning("closing a connection pool failed: %s", exc)
    for sync_transport in sync:
        try:
            await asyncio.to_thread(sync_transport.close)
        except Exception as exc:
            log.warning("closing a connection pool failed: %s", exc)
