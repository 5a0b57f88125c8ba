"""A local fake of Binance's public market data on 127.0.0.1: a combined-stream websocket and the
REST depth endpoint, on one port (aiohttp), for the collector's tests and benchmark; and of OKX's
and Bybit v5's public order-book websockets (FakeExchange("spot", exchange="okx"|"bybit")).

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

OKX (`/ws/v5/public`, channel `books`) and Bybit v5 (`/v5/public/<market>`, `orderbook.50.<S>`)
serve the same spot capture's levels as their own symbols (OKX `NKN-USDT`, Bybit `NKNUSDT`), with
their own ids: OKX `seqId` advancing in steps of 1 to 3 with `prevSeqId` the previous `seqId`, Bybit
`u` by one. Nothing is sent before a subscription ({"op": "subscribe", "args": [...]}); a symbol's
subscription is answered with its snapshot in-stream (OKX `action: snapshot` with `prevSeqId -1`,
Bybit `type: snapshot`, the id of the last message the exchange produced) before its next update,
and an unsubscription stops it: unsubscribe + subscribe (the collector's resync) brings a fresh
snapshot. An unknown symbol is refused as the venue refuses it; OKX's "ping" is answered "pong",
Bybit's {"op": "ping"} with its pong. drop_messages(symbol, count) loses the symbol's next
`count` messages (produced, in sent_ids, sent to nobody) on every venue. The faults above apply to
each venue's websocket alike. stats also counts subscribes, unsubscribes, stream_snapshots (sent
in-stream) and pings.

python -m tests.tooling.fake_exchange --market spot --port 8765 [--exchange okx] runs one on its own.
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
VENUE_CAPTURE = "spot"  # the Binance capture whose levels OKX and Bybit serve
QUOTES = ("USDT", "BTC", "ETH", "EUR")   # OKX's instId splits the capture's symbols at their quote


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


def okx_inst_id(symbol: str) -> str:
    quote = next(q for q in QUOTES if symbol.endswith(q))
    return f"{symbol[:-len(quote)]}-{quote}"


class _VenueBook(_Book):
    """One symbol's stream as OKX (`books`) or Bybit v5 (`orderbook.50`) sends it."""

    def __init__(self, venue, symbol, updates, snapshot, first_id):
        super().__init__(symbol, updates, snapshot, first_id, False)
        self.venue = venue

    def next_message(self, skip: int = 0) -> str:
        _, bids, asks = self.updates[self.index % len(self.updates)]
        step = 1 + self.index % 3 if self.venue == "okx" else 1
        self.index += 1
        prev, self.last_id = self.last_id, self.last_id + step
        self.sent.append((self.last_id, self.last_id))
        return self._message("update", bids, asks, prev)

    def snapshot_message(self) -> str:
        bids, asks = self.snapshot
        return self._message("snapshot", bids[:50], asks[:50], -1)

    def _message(self, action, bids, asks, prev) -> str:
        now = int(time.time() * 1000)
        if self.venue == "okx":
            body = {"arg": {"channel": "books", "instId": self.symbol}, "action": action,
                    "data": [{"asks": [[p, q, "0", "1"] for p, q in asks],
                              "bids": [[p, q, "0", "1"] for p, q in bids], "ts": str(now),
                              "checksum": 0, "seqId": self.last_id, "prevSeqId": prev}]}
        else:
            body = {"topic": f"orderbook.50.{self.symbol}",
                    "type": "snapshot" if action == "snapshot" else "delta", "ts": now,
                    "data": {"s": self.symbol, "b": bids, "a": asks, "u": self.last_id,
                             "seq": self.last_id * 10 + 7}, "cts": now - 1}
        return json.dumps(body, separators=(",", ":"))


class FakeExchange:
    def __init__(self, market: str = "spot", port: int = 0, tick_s: float = 0.1,
                 max_connection_seconds: float | None = None, messages_per_tick: int = 1,
                 exchange: str = "binance"):
        self.market, self.port, self.tick_s, self.exchange = market, port, tick_s, exchange
        self.messages_per_tick = messages_per_tick
        self.max_connection_seconds = max_connection_seconds
        if exchange == "binance":
            futures = market != "spot"
            self.books = {symbol: _Book(symbol, *entry, futures)
                          for symbol, entry in load_capture(market).items()}
            self.depth_path = CAPTURES[market][2]
        else:
            name = okx_inst_id if exchange == "okx" else str
            self.books = {name(symbol): _VenueBook(exchange, name(symbol), *entry)
                          for symbol, entry in load_capture(VENUE_CAPTURE).items()}
            self.depth_path = None
        self.clients: dict = {}             # websocket -> the symbols it is sent
        self.subscribing: dict = {}         # websocket -> symbols whose snapshot is due
        self.refuse_until = 0.0
        self.accept_then_close = False
        self.stalled: set = set()
        self.pending_failures: collections.deque = collections.deque()
        self.pending_skips: dict = {}
        self.pending_drops: collections.Counter = collections.Counter()
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
        self.stalled.update(self.clients)

    def skip_ids(self, symbol: str, count: int) -> None:
        self.pending_skips[symbol] = count

    def drop_messages(self, symbol: str, count: int = 1) -> None:
        """The symbol's next `count` messages are produced and sent to nobody (every listener sees
        a gap of the venue's ids)."""
        self.loop.call_soon_threadsafe(self.pending_drops.update, {symbol: count})

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
        if self.exchange == "binance":
            app.router.add_get("/stream", self._stream)
            app.router.add_get("/ws", self._stream)
            app.router.add_get(self.depth_path, self._depth)
        elif self.exchange == "okx":
            app.router.add_get("/ws/v5/public", self._venue_stream)
        else:
            app.router.add_get(f"/v5/public/{self.market}", self._venue_stream)
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
        for ws in list(self.clients):
            await ws.close()
        self.stats["dropped"] += len(self.clients)

    # -- the stream --

    def _frame(self, symbol: str, book) -> str:
        if self.exchange != "binance":
            return book.next_message()
        data = book.next_message(self.pending_skips.pop(symbol, 0))
        return json.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": data},
                          separators=(",", ":"))

    def _snapshots_due(self) -> dict:
        """websocket -> the snapshots of the symbols it subscribed since the last tick, taken
        before this tick's messages (which follow them); those symbols are sent from now on."""
        due = {}
        for ws, symbols in self.subscribing.items():
            if ws in self.clients:
                due[ws] = [self.books[symbol].snapshot_message() for symbol in sorted(symbols)]
                self.clients[ws].update(symbols)
        self.subscribing = {}
        return due

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            due = self._snapshots_due()
            frames = {}
            for symbol, book in self.books.items():
                for _ in range(self.messages_per_tick):
                    text = self._frame(symbol, book)
                    if self.pending_drops[symbol] > 0:        # lost by the exchange
                        self.pending_drops[symbol] -= 1
                        self.stats["dropped_messages"] += 1
                        continue
                    frames.setdefault(symbol, []).append(text)
            self.stats["ticks"] += 1
            for ws, wanted in list(self.clients.items()):
                if ws in self.stalled:
                    continue
                if self.max_connection_seconds and now - ws.opened_at > self.max_connection_seconds:
                    self.clients.pop(ws, None)
                    await ws.close()
                    self.stats["expired"] += 1
                    continue
                snapshots = due.get(ws, [])
                texts = snapshots + [text for symbol in sorted(wanted)
                                     for text in frames.get(symbol, ())]
                for text in texts:
                    try:
                        await ws.send_str(text)
                        self.stats["frames"] += 1
                    except (ConnectionError, RuntimeError):
                        self.clients.pop(ws, None)
                        break
                else:
                    self.stats["stream_snapshots"] += len(snapshots)

    async def _refused(self, request):
        """The answer to a handshake refused now (503, or accepted and closed with 1013), else
        None."""
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
        return None

    async def _accept(self, request, wanted):
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        ws.opened_at = time.monotonic()
        self.clients[ws] = set(wanted)
        self.stats["connections"] += 1
        return ws

    async def _stream(self, request):
        refused = await self._refused(request)
        if refused is not None:
            return refused
        streams = request.query.get("streams", "")
        ws = await self._accept(request, {name.split("@")[0].upper()
                                          for name in streams.split("/") if name})
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    try:
                        body = json.loads(message.data)
                    except ValueError:
                        continue
                    if body.get("method") == "SUBSCRIBE":
                        added = {p.split("@")[0].upper() for p in body.get("params", [])}
                        self.clients[ws].update(added)
                        await ws.send_str(json.dumps({"result": None, "id": body.get("id")}))
        finally:
            self.clients.pop(ws, None)
            self.stalled.discard(ws)
        return ws

    # -- OKX and Bybit v5: subscriptions, snapshots in-stream --

    async def _venue_stream(self, request):
        refused = await self._refused(request)
        if refused is not None:
            return refused
        ws = await self._accept(request, ())
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT or ws in self.stalled:
                    continue
                for reply in self._venue_request(ws, message.data):
                    await ws.send_str(reply)
        finally:
            self.clients.pop(ws, None)
            self.subscribing.pop(ws, None)
            self.stalled.discard(ws)
        return ws

    def _venue_request(self, ws, text: str) -> list:
        """The replies to one client message; a (un)subscription takes effect at once."""
        okx = self.exchange == "okx"
        if okx and text == "ping":
            self.stats["pings"] += 1
            return ["pong"]
        try:
            body = json.loads(text)
        except ValueError:
            return [json.dumps({"event": "error", "code": "60012", "msg": f"Invalid request: {text}"}
                               if okx else {"success": False, "ret_msg": "Invalid request"})]
        op = body.get("op")
        if op == "ping":
            self.stats["pings"] += 1
            return [json.dumps({"success": True, "ret_msg": "pong", "conn_id": "fake", "op": "ping"})]
        if op not in ("subscribe", "unsubscribe"):
            return []
        self.stats[f"{op}s"] += 1
        replies, symbols = [], []
        for arg in body.get("args", []):
            symbol = arg.get("instId", "") if okx else str(arg).rpartition(".")[2]
            if symbol not in self.books:
                replies.append(json.dumps(
                    {"event": "error", "code": "60018", "connId": "fake",
                     "msg": f"Wrong URL or channel:books,instId:{symbol} doesn't exist."} if okx
                    else {"success": False, "ret_msg": f"Invalid symbol :[{arg}]", "conn_id": "fake",
                          "op": op}))
                continue
            symbols.append(symbol)
            if okx:
                replies.append(json.dumps({"event": op, "arg": arg, "connId": "fake"}))
        if not okx and symbols:
            replies.append(json.dumps({"success": True, "ret_msg": "", "conn_id": "fake", "op": op}))
        for symbol in symbols:
            if op == "subscribe":
                self.subscribing.setdefault(ws, set()).add(symbol)
            else:
                self.clients.get(ws, set()).discard(symbol)
                self.subscribing.get(ws, set()).discard(symbol)
        return replies

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
    parser.add_argument("--market", default="spot",
                        help=f"binance: {', '.join(sorted(CAPTURES))}; okx: spot; bybit: the category")
    parser.add_argument("--exchange", default="binance", choices=("binance", "bybit", "okx"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--tick_seconds", type=float, default=0.1)
    parser.add_argument("--messages_per_tick", type=int, default=1)
    args = parser.parse_args(argv)
    exchange = FakeExchange(args.market, args.port, args.tick_seconds,
                            messages_per_tick=args.messages_per_tick, exchange=args.exchange).start()
    print(f"fake {args.exchange} {args.market} exchange on {exchange.ws_url} / {exchange.rest_url}: "
          f"{','.join(exchange.symbols)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        exchange.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
