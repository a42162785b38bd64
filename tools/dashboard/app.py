"""`candlewax dashboard`: a live candle chart and the pipeline's health, in a browser.

A Starlette app served by uvicorn. Read-only (GET routes only) and bound to 127.0.0.1
unless told otherwise. The page (`static/`) draws candles with TradingView's Lightweight
Charts (vendored, no CDN); it gets the past from the lake (`/api/bars`) and what happens
next as server-sent events (`/api/events`): closed candles (a restated one replaces its
bar), the forming candle up to five times a second, quote bars, and the health strip
once a second. Everything the page shows is set as text, never as markup, and the
Content-Security-Policy allows scripts from this server only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from config.durations import parse_duration_ms
from tools.dashboard.bars import CANDLE, QUOTE_BAR, RecentBars, merged
from tools.dashboard.feed import HealthPoller, TopicFeed
from tools.dashboard.health import Health
from tools.dashboard.history import lake_bars, lake_symbols

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("candlewax.dashboard")
# Scripts from this server only; inline styles are allowed because the chart library
# sizes its canvases with them (a style cannot run code).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_BARS = 5_000
LAKE_SYMBOLS_TTL_S = 30.0
QUEUE_SIZE = 2_000  # events a slow page may fall behind before it is told to reload


@dataclass
class DashboardConfig:
    lake: Path
    resolutions: tuple[str, ...]
    client_config: dict[str, Any] | None  # None: no Kafka, history from the lake only
    topics: dict[str, str] = field(default_factory=dict)  # kind -> topic
    metrics_urls: tuple[str, ...] = ()
    lookback_ms: int = 15 * 60_000


class _Subscriber:
    def __init__(self, symbol: str, resolution: str):
        self.symbol = symbol
        self.resolution = resolution
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, event: str, data: Any) -> None:
        try:
            self.queue.put_nowait((event, data))
        except asyncio.QueueFull:  # fell behind: drop what waits, have the page reload
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(("reset", {}))


class Hub:
    """Hands what the feed threads deliver to the pages watching, on the event loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subscribers: set[_Subscriber] = set()

    def publish(self, event: str, data: Any) -> None:
        """From any thread."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(self._dispatch, event, data)

    def _dispatch(self, event: str, data: Any) -> None:
        for subscriber in list(self.subscribers):
            if event == "health" or (
                data.get("symbol") == subscriber.symbol
                and data.get("resolution") == subscriber.resolution
            ):
                subscriber.offer(event, data)


class Dashboard:
    """The app and the threads feeding it."""

    def __init__(self, config: DashboardConfig):
        self.config = config
        self.recent = RecentBars({name: parse_duration_ms(name) for name in config.resolutions})
        self.hub = Hub()
        self.feed: TopicFeed | None = None
        if config.client_config is not None:
            self.feed = TopicFeed(
                config.client_config, config.topics, self._on_record, config.lookback_ms
            )
        self.poller = HealthPoller(config.metrics_urls, self._on_health)
        self.latest_health: Health | None = None
        self._lake_symbols_at: tuple[float, set[str]] = (-math.inf, set())
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/api/config", self.api_config),
                Route("/api/bars", self.api_bars),
                Route("/api/health", self.api_health),
                Route("/api/events", self.api_events),
                Mount("/static", StaticFiles(directory=STATIC), name="static"),
            ],
            lifespan=self._lifespan,
        )
        self.app.add_middleware(_SecurityHeaders)

    # --- the threads ----------------------------------------------------------------
    def _on_record(self, kind: str, record: dict[str, Any]) -> None:
        for changed_kind, changed in self.recent.add(kind, record):
            self.hub.publish(changed_kind, changed)

    def _on_health(self, health: Health) -> None:
        self.latest_health = health
        self.hub.publish("health", health.as_json())

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.hub.loop = asyncio.get_running_loop()
        if self.feed is not None:
            self.feed.start()
        if self.config.metrics_urls:
            self.poller.start()
        try:
            yield
        finally:
            self.hub.loop = None
            for thread in (self.feed, self.poller):
                if thread is not None and thread.is_alive():
                    thread.stop()
                    await asyncio.to_thread(thread.join, 5.0)

    # --- routes ---------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def api_config(self, request: Request) -> Response:
        symbols = sorted(await self._lake_symbols() | self.recent.symbols())
        return JSONResponse(
            {
                "symbols": symbols,
                "resolutions": list(self.config.resolutions),
                "live": self.feed is not None,
                "health": bool(self.config.metrics_urls),
            }
        )

    def _series(self, request: Request) -> tuple[str, str, int]:
        params = request.query_params
        symbol = params.get("symbol", "")
        resolution = params.get("resolution", self.config.resolutions[0])
        if not symbol or len(symbol) > 128:
            raise _BadRequest("symbol: expected a symbol name")
        if resolution not in self.config.resolutions:
            raise _BadRequest(f"resolution: expected one of {', '.join(self.config.resolutions)}")
        try:
            limit = int(params.get("limit", "1500"))
        except ValueError:
            raise _BadRequest("limit: expected a whole number") from None
        if not 1 <= limit <= MAX_BARS:
            raise _BadRequest(f"limit: expected 1 to {MAX_BARS}")
        return symbol, resolution, limit

    async def _lake_symbols(self) -> set[str]:
        """The lake's symbols, read at most every `LAKE_SYMBOLS_TTL_S`: every open page
        asks every 10 s, and the query reads every candle file's symbol column."""
        at, symbols = self._lake_symbols_at
        if time.monotonic() - at > LAKE_SYMBOLS_TTL_S:
            symbols = await asyncio.to_thread(lake_symbols, self.config.lake)
            self._lake_symbols_at = (time.monotonic(), symbols)
        return symbols

    async def api_bars(self, request: Request) -> Response:
        try:
            symbol, resolution, limit = self._series(request)
        except _BadRequest as bad:
            return JSONResponse({"error": str(bad)}, status_code=400)
        lake = self.config.lake
        candles, quote_bars = await asyncio.gather(
            asyncio.to_thread(lake_bars, lake, CANDLE, symbol, resolution, limit),
            asyncio.to_thread(lake_bars, lake, QUOTE_BAR, symbol, resolution, limit),
        )
        recent = self.recent
        return JSONResponse(
            {
                "candles": merged(candles, recent.closed(CANDLE, symbol, resolution), limit),
                "forming": recent.forming(symbol, resolution),
                "quote_bars": merged(
                    quote_bars, recent.closed(QUOTE_BAR, symbol, resolution), limit
                ),
            }
        )

    async def api_health(self, request: Request) -> Response:
        health = self.latest_health
        return JSONResponse(None if health is None else health.as_json())

    async def api_events(self, request: Request) -> Response:
        try:
            symbol, resolution, _ = self._series(request)
        except _BadRequest as bad:
            return JSONResponse({"error": str(bad)}, status_code=400)
        subscriber = _Subscriber(symbol, resolution)
        self.hub.subscribers.add(subscriber)
        health = self.latest_health

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                if health is not None:
                    yield _event("health", health.as_json())
                while True:
                    try:
                        event, data = await asyncio.wait_for(subscriber.queue.get(), 15.0)
                    except TimeoutError:
                        yield ": keep-alive\n\n"  # proxies close silent connections
                        continue
                    yield _event(event, data)
            finally:
                self.hub.subscribers.discard(subscriber)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )


class _BadRequest(ValueError):
    pass


def _event(name: str, data: Any) -> str:
    # JSON has no raw newline, so one `data:` line holds it; the page parses, never evals.
    # The contracts never put NaN or infinity in a record; `null` if one ever came.
    return f"event: {name}\ndata: {json.dumps(_finite(data))}\n\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _SecurityHeaders:
    """The security headers on every response (pure ASGI: streams stay streams)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
