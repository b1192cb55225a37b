"""The bare-client baseline of ``drain.py --bare``: what one plain ``httpx.AsyncClient`` per
process does against the same loopback destination, with no queue, no store and no limit.

    python bare_httpx.py URL N INFLIGHT [TRANSPORT]

TRANSPORT is ``httpx`` (httpx's own, the default) or ``aiohttp`` (``httpx-aiohttp``'s transport:
the same client over aiohttp's pool and parser, as ``ctx.http`` sends by default).

Sends N POSTs (``/orders``, a JSON body and an ``Idempotency-Key`` header, as the floodway
job does), INFLIGHT at a time over one keep-alive pool, after one warm-up request that opens
the first connection. Prints one JSON line: the wall-clock start and end of the N requests
(``time.time()``, so several processes can be combined), how many were answered 200, and the
CPU seconds the process spent on them; a request whose connection failed is sent again and
counted in ``errors``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import uuid

import httpx


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(url: str, n: int, inflight: int, transport: str = "httpx") -> None:
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    options: dict = {"limits": limits}
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        options = {"transport": AiohttpTransport(limits=limits)}
    async with httpx.AsyncClient(base_url=url, timeout=60, **options) as client:
        await client.post("/orders", json={"id": -1}, headers={"Idempotency-Key": f"warm-{uuid.uuid4()}"})
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        ok = errors = 0

        async def sender() -> None:
            nonlocal ok, errors
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    response = await client.post(
                        "/orders", json={"id": i}, headers={"Idempotency-Key": f"bare-{uuid.uuid4()}"}
                    )
                except httpx.TransportError:
                    # a connection the server dropped (a long run under load sees a few): sent
                    # again, as any client would, and counted
                    errors += 1
                    queue.put_nowait(i)
                    continue
                ok += response.status_code == 200

        c0, t0 = cpu(), time.time()
        await asyncio.gather(*(sender() for _ in range(inflight)))
        t1, c1 = time.time(), cpu()
    print(
        json.dumps(
            {
                "start": t0,
                "end": t1,
                "requests": n,
                "ok": ok,
                "errors": errors,
                "cpu_seconds": c1 - c0,
                "transport": transport,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5]))
