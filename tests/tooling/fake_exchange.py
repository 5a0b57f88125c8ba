"""A local fake of Binance's public market data on 127.0.0.1: a combined-stream websocket and the
REST depth endpoint, on one port (aiohttp), for the collector's tests and benchmark.

It replays the real captures in ../shared/data/cryptofeed: each symbol's depthUpdate messages (their
levels and id spans) loop forever, renumbered so the ids stay continuous (spot U = previous u + 1,
futures pu = previous u) and E is now. The exchange ticks whether anyone listens, so a client that
was away misses ids. A REST snapshot answers lastUpdateId = the symbol's last id sent, with the
capture's own snapshot levels: consistent with the stream. Faults, callable from any thread:
drop_connections(), refuse_connections(seconds) (handshakes answered 503),
refuse_connections(seconds, accept_then_close=True) (handshakes accepted, then closed at once with
code 1013 "try again later"), rest_failures([429, 500, ...]) (the next REST answers, 429/418 with
Retry-After), stall() (the open connections stay open, no frame), skip_ids(symbol,
count) (the exchange loses messages: every listener sees a gap), max_connection_seconds (the
exchange closes a connection that old: Binance's 24 h, at seconds scale). stats counts what it saw:
handshakes (every websocket request, refused or not), refused (503), closed_at_once (1013),
connections (served), frames, rest_requests, snapshots, ...; sent_ids(symbol) is the list of
(first, last) update ids of the messages the symbol's stream produced, listened to or not.

python -m tests.tooling.fake_exchange --market spot --port 8765 runs one on its own.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import threading
import time

from aiohttp import WSMsgType, web

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "shared", "data", "cryptofeed")
CAPTURES = {"spot": ("BINANCE.ws.1.0", "BINANCE.http.0.0", "/api/v3/depth"),
            "usdm": ("BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0", "/fapi/v1/depth"),
            "coinm": ("BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0", "/dapi/v1/depth")}


SENT_KEPT = 100_000     # (first, last) ids of this many messages per symbol are kept (sent_ids)


def load_capture(market: str, data_dir: str = DATA):
    """symbol -> ([(span, bids, asks)...], snapshot (bids, asks), first lastUpdateId) of a capture."""
    ws_name, http_name, _ = CAPTURES[market]
    updates = collections.defaultdict(list)
    with open(os.path.join(data_dir, ws_name)) as handle:
        for line in handle:
            _, sep, raw = line.partition(": ")
            if not sep or '"depthUpdate"' not in raw:
                continue
            data = json.loads(raw)["data"]
            updates[data["s"]].append((data["u"] - data["U"], data["b"], data["a"]))
    snapshots = {}
    with open(os.path.join(data_dir, http_name)) as handle:
        for line in handle:
            url, _, rest = line.partition(" -> ")
            if not rest:
                continue
            symbol = url.split("symbol=")[1].split("&")[0].upper()
            body = json.loads(rest.partition(": ")[2])
            snapshots[symbol] = (body["bids"], body["asks"], body["lastUpdateId"])
    return {symbol: (updates[symbol], snapshots[symbol][:2], snapshots[symbol][2])
            for symbol in updates if symbol in snapshots}


class _Book:
    """One symbol's looping, renumbered stream."""

    def __init__(self, symbol, updates, snapshot, first_id, futures: bool):
        self.symbol, self.updates, self.snapshot, self.futures = symbol, updates, snapshot, futures
        self.last_id, self.index = first_id, 0
        self.sent = collections.deque(maxlen=SENT_KEPT)   # (U, u) of the messages produced

    def next_message(self, skip: int = 0) -> dict:
        span, bids, asks = self.updates[self.index % len(self.updates)]
        self.index += 1
        prev = self.last_id
        first = prev + 1 + skip
        self.last_id = first + span
        self.sent.append((first, self.last_id))
        now = int(time.time() * 1000)
        data = {"e": "depthUpdate", "E": now, "s": self.symbol, "U": first, "u": self.last_id,
                "b": bids, "a": asks}
        if self.futures:
            data = {"e": "depthUpdate", "E": now, "T": now - 1, "s": self.symbol, "U": first,
                    "u": self.last_id, "pu": prev + skip, "b": bids, "a": asks}
        return data


class FakeExchange:
    def __init__(self, market: str = "spot", port: int = 0, tick_s: float = 0.1,
                 max_connection_seconds: float | None = None, messages_per_tick: int = 1):
        self.market, self.port, self.tick_s = market, port, tick_s
        self.messages_per_tick = messages_per_tick
        self.max_connection_seconds = max_connection_seconds
        futures = market != "spot"
        self.books = {symbol: _Book(symbol, *entry, futures)
                      for symbol, entry in load_capture(market).items()}
        self.depth_path = CAPTURES[market][2]
        self.clients: set = set()
        self.refuse_until = 0.0
        self.accept_then_close = False
        self.stalled: set = set()
        self.pending_failures: collections.deque = collections.deque()
        self.pending_skips: dict = {}
        self.stats = collections.Counter()
        self.loop = None
        self._ready = threading.Event()
        self._thread = None
        self._runner = None
        self._stop = None

    # -- the faults (thread-safe) --

    def drop_connections(self) -> None:
        self._call(self._drop)

    def refuse_connections(self, seconds: float, accept_then_close: bool = False) -> None:
        """For `seconds`, refuse every websocket handshake: with HTTP 503, or (accept_then_close)
        accept it and close the connection at once with code 1013 "try again later"."""
        self.accept_then_close = accept_then_close
        self.refuse_until = time.monotonic() + seconds

    def sent_ids(self, symbol: str) -> list:
        """(first id, last id) of every message of `symbol`'s stream so far (the last SENT_KEPT),
        in order."""
        return list(self.books[symbol].sent)

    def rest_failures(self, statuses) -> None:
        self.pending_failures.extend(statuses)

    def stall(self) -> None:
        """The open connections go silent (still open, pings answered); new ones are served."""
        self.stalled.update(ws for ws, _ in self.clients)

    def skip_ids(self, symbol: str, count: int) -> None:
        self.pending_skips[symbol] = count

    @property
    def symbols(self):
        return sorted(self.books)

    # -- life --

    def start(self) -> "FakeExchange":
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-exchange")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fake exchange did not start")
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, fn) -> None:
        self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(fn()))

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/ws", self._stream)
        app.router.add_get(self.depth_path, self._depth)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        ticker = asyncio.create_task(self._tick())
        self._ready.set()
        await self._stop.wait()
        ticker.cancel()
        await self._drop()
        await self._runner.cleanup()

    async def _drop(self) -> None:
        for ws, _ in list(self.clients):
            await ws.close()
        self.stats["dropped"] += len(self.clients)

    # -- the stream --

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            frames = {}
            for symbol, book in self.books.items():
                for _ in range(self.messages_per_tick):
                    data = book.next_message(self.pending_skips.pop(symbol, 0))
                    frames.setdefault(symbol, []).append(json.dumps(
                        {"stream": f"{symbol.lower()}@depth@100ms", "data": data},
                        separators=(",", ":")))
            self.stats["ticks"] += 1
            for client in list(self.clients):
                ws, wanted = client
                if ws in self.stalled:
                    continue
                if self.max_connection_seconds and now - ws.opened_at > self.max_connection_seconds:
                    self.clients.discard(client)
                    await ws.close()
                    self.stats["expired"] += 1
                    continue
                for symbol in wanted:
                    for text in frames.get(symbol, ()):
                        try:
                            await ws.send_str(text)
                            self.stats["frames"] += 1
                        except (ConnectionError, RuntimeError):
                            self.clients.discard(client)
                            break

    async def _stream(self, request):
        self.stats["handshakes"] += 1
        if time.monotonic() < self.refuse_until and not self.accept_then_close:
            self.stats["refused"] += 1
            return web.Response(status=503, text="refusing connections")
        if time.monotonic() < self.refuse_until:
            ws = web.WebSocketResponse(heartbeat=None)
            await ws.prepare(request)
            self.stats["closed_at_once"] += 1
            await ws.close(code=1013, message=b"try again later")
            return ws
        streams = request.query.get("streams", "")
        wanted = {name.split("@")[0].upper() for name in streams.split("/") if name}
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        ws.opened_at = time.monotonic()
        client = (ws, frozenset(wanted))
        self.clients.add(client)
        self.stats["connections"] += 1
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    try:
                        body = json.loads(message.data)
                    except ValueError:
                        continue
                    if body.get("method") == "SUBSCRIBE":
                        added = {p.split("@")[0].upper() for p in body.get("params", [])}
                        self.clients.discard(client)
                        client = (ws, client[1] | added)
                        self.clients.add(client)
                        await ws.send_str(json.dumps({"result": None, "id": body.get("id")}))
        finally:
            self.clients.discard(client)
            self.stalled.discard(ws)
        return ws

    # -- REST --

    async def _depth(self, request):
        self.stats["rest_requests"] += 1
        if self.pending_failures:
            status = self.pending_failures.popleft()
            self.stats[f"rest_{status}"] += 1
            headers = {"Retry-After": "1"} if status in (418, 429) else {}
            return web.json_response({"code": -1003, "msg": f"fake failure {status}"},
                                     status=status, headers=headers)
        symbol = request.query.get("symbol", "").upper()
        book = self.books.get(symbol)
        if book is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        limit = int(request.query.get("limit", "100"))
        bids, asks = book.snapshot
        body = {"lastUpdateId": book.last_id, "bids": bids[:limit], "asks": asks[:limit]}
        if book.futures:
            now = int(time.time() * 1000)
            body = {"lastUpdateId": book.last_id, "E": now, "T": now, "bids": bids[:limit],
                    "asks": asks[:limit]}
        self.stats["snapshots"] += 1
        return web.json_response(body, headers={"X-MBX-USED-WEIGHT-1M": "50"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tooling.fake_exchange")
    parser.add_argument("--market", default="spot", choices=sorted(CAPTURES))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--tick_seconds", type=float, default=0.1)
    parser.add_argument("--messages_per_tick", type=int, default=1)
    args = parser.parse_args(argv)
    exchange = FakeExchange(args.market, args.port, args.tick_seconds,
                            messages_per_tick=args.messages_per_tick).start()
    print(f"fake {args.market} exchange on {exchange.ws_url} / {exchange.rest_url}: "
          f"{','.join(exchange.symbols)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        exchange.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
