"""`python -m goodput.router`: serve one InferenceService's endpoint (see router.config for the flags)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import aiohttp
import uvloop
from aiohttp import web

from goodput.router.app import Router, create_app
from goodput.router.config import RouterConfig, parse_args
from goodput.router.dispatch import Tier
from goodput.router.endpoints import InCluster, watch_tier
from goodput.router.metrics import RouterMetrics, probe_loop
from goodput.router.refresh import refresh_forever

REFRESH_TIMEOUT_SHARE = 0.8  # a refresh gives up before the next one starts: a silent replica is out in one


def build(config: RouterConfig) -> Router:
    metrics = RouterMetrics()
    tier_names = config.static or config.services
    tiers = {}
    for name in tier_names:
        tiers[name] = Tier(name, config.tier_policy(name), config.limits, metrics, config.cache_blocks)
    for name, urls in config.static.items():
        tiers[name].set_endpoints(urls)
    return Router(tiers, config.default_class, metrics, config.quotas, config.api_key)


async def serve(config: RouterConfig) -> None:
    router = build(config)
    app = create_app(router)
    background: list[asyncio.Task[None]] = []

    async def side_tasks(_: web.Application):  # type: ignore[no-untyped-def]
        session = aiohttp.ClientSession()
        background.append(asyncio.create_task(probe_loop(router.metrics.loop_lag)))
        background.append(
            asyncio.create_task(
                refresh_forever(
                    session, router.tiers.values(), config.refresh_s, config.refresh_s * REFRESH_TIMEOUT_SHARE
                )
            )
        )
        if config.services:
            api = InCluster()
            for tier, service in config.services.items():
                assert config.namespace is not None
                background.append(
                    asyncio.create_task(
                        watch_tier(session, api, config.namespace, service, router.tiers[tier])
                    )
                )
        yield
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await session.close()

    app.cleanup_ctx.append(side_tasks)
    # SIGTERM: stop accepting, let streams in flight finish for up to --drain-s. A client that leaves cancels its
    # handler: a queued request leaves the queue, a forwarded one frees its replica at once (and nothing logs an
    # error for a write to a closed connection).
    runner = web.AppRunner(
        app, access_log=None, handle_signals=True, shutdown_timeout=config.drain_s, handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    # uvloop: the same asyncio API on libuv, about 1.4× the chunks per CPU-second of the stock loop (bench/router_overhead.py)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
