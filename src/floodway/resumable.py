"""The pieces of resumable work that are not the Context itself: run-budget endings,
ascending paging, bounded-concurrency mapping, payload segments, and how ``ctx.once`` stores
results.

The auto-resume pattern is built in: fetch one page, process it, checkpoint it, and only then fetch
the next, so a run that ends (budget, 429, crash) loses nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence

from . import jsontext
from .errors import ConfigError, PagingError

if TYPE_CHECKING:
    from .context import Context

#: the idempotency key of the ``ctx.once`` call in progress (read by ``ctx.http``)
current_idempotency_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "floodway_idempotency_key", default=None
)

SEGMENT_MARK = "__floodway_segments__"


@dataclass(frozen=True)
class ContinueLater:
    """Returned by ``ctx.continue_later()``: end this run, keep the cursor, run again."""

    delay: float | None = None


def idempotency_key(state_key: str, entry: str) -> str:
    """A stable key for one record of one state: the same on every rerun, different across
    states, and opaque to the destination."""
    digest = hashlib.sha256(f"{state_key}\x00{entry}".encode()).hexdigest()
    return f"fw-{digest[:40]}"


def ledger_entry(key: object) -> str:
    """``ctx.once`` keys are strings or ints; ``5`` and ``"5"`` are different records."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ConfigError(f"ctx.once: the key must be a str or an int, got {type(key).__name__} {key!r}")
    return json.dumps(key)


def encode_result(value: Any) -> str | None:
    """The ledger form of what the once'd function returned. An httpx response is kept as its
    status, content type and body, and rebuilt on a rerun."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        httpx = None  # type: ignore[assignment]
    if httpx is not None and isinstance(value, httpx.Response):
        return json.dumps(
            {
                "__httpx_response__": True,
                "status_code": value.status_code,
                "content_type": value.headers.get("content-type"),
                "text": value.text,
            }
        )
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        # the call happened: record that, even if its result cannot be kept
        return json.dumps({"__unstored_result__": type(value).__name__})


def decode_result(text: str | None) -> Any:
    if text is None:
        return None
    value = json.loads(text)
    if isinstance(value, dict) and value.get("__httpx_response__"):
        import httpx

        headers = {"content-type": value["content_type"]} if value.get("content_type") else {}
        return httpx.Response(value["status_code"], headers=headers, text=value["text"])
    if isinstance(value, dict) and "__unstored_result__" in value:
        return None
    return value


async def call_maybe_async(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def bounded_map(
    items: Iterable[Any], fn: Callable[[Any], Awaitable[Any] | Any], *, concurrency: int = 1
) -> list[Any]:
    """Like p-map: ``fn`` over ``items`` with at most ``concurrency`` at once, results in order.
    The first error cancels what is still running and is raised."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
    items = list(items)
    if concurrency == 1:
        return [await call_maybe_async(fn, item) for item in items]
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Any) -> Any:
        async with gate:
            return await call_maybe_async(fn, item)

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _default_position(record: Any) -> Any:
    if isinstance(record, dict) and "id" in record:
        return record["id"]
    raise PagingError("ctx.pages: records are not dicts with an 'id'; pass position=lambda r: ...")


class Pages:
    """``async for page in ctx.pages(fetch_page)``: one page at a time, each checkpointed before
    the next is fetched.

    ``fetch_page(after)`` returns the records that come after the cursor ``after`` (``None``
    on the very first run), in ascending order of ``position(record)`` (default
    ``record["id"]``); an empty page ends the walk. When the body of the loop asks for the next
    page, the previous one is done: its last position becomes the cursor, durably. Before each
    fetch the run budget is checked; when it is spent (or the job was paused) the walk stops
    with ``more`` True, and the task should ``return ctx.continue_later()``.
    """

    def __init__(
        self,
        ctx: "Context",
        fetch_page: Callable[[Any], Awaitable[Sequence[Any]] | Sequence[Any]],
        *,
        start: Any = ...,
        position: Callable[[Any], Any] = _default_position,
    ):
        self.ctx = ctx
        self.fetch_page = fetch_page
        self.start = ctx.cursor if start is ... else start
        self.position = position
        #: True when the walk stopped early (budget or pause) with pages still to fetch
        self.more = False
        self.pages = 0
        self.records = 0

    async def __aiter__(self) -> AsyncIterator[Sequence[Any]]:
        cursor = self.start
        while True:
            if self.ctx.out_of_time():
                self.more = True
                return
            page = await call_maybe_async(self.fetch_page, cursor)
            if page is None or len(page) == 0:
                self.more = False
                return
            last = cursor
            for record in page:
                here = self.position(record)
                if last is not None and not _ascending(last, here):
                    raise PagingError(
                        f"ctx.pages: page {self.pages + 1} went backwards: position {here!r} came after "
                        f"{last!r}; pages must be in ascending order (sort by id or creation time)"
                    )
                last = here
            yield page
            # the body asked for more: this page is done, and durable before the next fetch
            cursor = last
            await self.ctx.checkpoint(cursor)
            self.pages += 1
            self.records += len(page)


def _ascending(before: Any, after: Any) -> bool:
    try:
        return after > before
    except TypeError:
        raise PagingError(f"ctx.pages: positions {before!r} and {after!r} cannot be compared") from None


def split_segments(items: Sequence[Any], segment_bytes: int) -> list[str]:
    """Split a list into JSON texts of at most ``segment_bytes`` each (one item may exceed it
    alone; it then gets a segment of its own)."""
    segments: list[str] = []
    current: list[str] = []
    size = 2
    for item in items:
        text = jsontext.dumps(item)
        cost = len(text) + 1  # ASCII: characters are bytes
        if current and size + cost > segment_bytes:
            segments.append("[" + ",".join(current) + "]")
            current, size = [], 2
        current.append(text)
        size += cost
    if current or not segments:
        segments.append("[" + ",".join(current) + "]")
    return segments


class SegmentedList(Sequence[Any]):
    """A large list argument read back one segment at a time (what the task receives for a
    ``payload=`` argument that was stored in segments)."""

    def __init__(self, ctx: "Context", arg: str, count: int, total: int):
        self._ctx = ctx
        self.arg = arg
        self.segment_count = count
        self._total = total
        self._cache: tuple[int, list[Any]] | None = None

    def __len__(self) -> int:
        return self._total

    def segment(self, index: int) -> list[Any]:
        if self._cache is None or self._cache[0] != index:
            data = self._ctx.app.store.load_segment(self._ctx.job_id, self.arg, index)
            self._cache = (index, json.loads(data))
        return self._cache[1]

    def __iter__(self) -> Iterator[Any]:
        for index in range(self.segment_count):
            yield from self.segment(index)

    def __getitem__(self, index: Any) -> Any:  # sequential access is the intended use
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._total
        for i, item in enumerate(self):
            if i == index:
                return item
        raise IndexError(index)


class Records:
    """``async for record in ctx.records("tickets")``: the items of a list argument — stored in
    segments when large — resumed at the cursor ``[segment, offset]``. Each finished segment
    is checkpointed; when the budget is spent (or the job paused) the walk checkpoints the exact
    position and stops with ``more`` True."""

    def __init__(self, ctx: "Context", arg: str):
        raw = ctx.job.args.get(arg)
        if isinstance(raw, dict) and SEGMENT_MARK in raw:
            self.segment_count, self.total = raw[SEGMENT_MARK], raw["count"]
            self._inline: list[Any] | None = None
        elif isinstance(raw, list):
            self.segment_count, self.total, self._inline = 1, len(raw), raw
        else:
            raise ConfigError(f"ctx.records: argument {arg!r} is not a list")
        self.ctx = ctx
        self.arg = arg
        self.more = False
        cursor = ctx.cursor
        if cursor is None:
            self.position = (0, 0)
        elif isinstance(cursor, list) and len(cursor) == 2 and all(isinstance(c, int) and c >= 0 for c in cursor):
            self.position = (cursor[0], cursor[1])
        else:
            raise ConfigError(f"ctx.records: the cursor {cursor!r} is not a [segment, offset] position")

    def _segment(self, index: int) -> list[Any]:
        if self._inline is not None:
            return self._inline
        return json.loads(self.ctx.app.store.load_segment(self.ctx.job_id, self.arg, index))

    async def __aiter__(self) -> AsyncIterator[Any]:
        first_segment, first_offset = self.position
        for index in range(first_segment, self.segment_count):
            items = await asyncio.to_thread(self._segment, index)
            start = first_offset if index == first_segment else 0
            for offset in range(start, len(items)):
                if self.ctx.out_of_time():
                    await self.ctx.checkpoint([index, offset])
                    self.more = True
                    return
                yield items[offset]
            await self.ctx.checkpoint([index + 1, 0])
