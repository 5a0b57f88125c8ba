"""Each venue's order-book messages in its own wire format (the shapes of its documentation), for
the per-venue tests and synthetic captures: snapshot(id) and delta(id, previous id) per venue, a
clean feed of them, and that feed as a cryptofeed raw capture (connect line, frames, REST lines).
"""
import json

from beam_pipeline.core import adapters

T0 = 1_700_000_000_000
STEP = 100


def js(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# ---- each venue's messages: snapshot(id) and delta(id, previous id), its key ------------------
# ids: the venue's own (OKX, Deribit, HTX: arbitrary steps; the others +1).

class Venue:
    exchange = market = symbol = None
    step = 1                     # how the venue's ids advance
    checked = True               # a dropped message is a gap (False: no per-key ids)
    rest_snapshot = False        # the snapshot is a REST body (decode_snapshot)

    def snapshot(self, n, at):
        raise NotImplementedError

    def delta(self, n, prev, at):
        raise NotImplementedError

    def bad_price(self, n, prev, at):
        """A delta whose price is not a number."""
        return self.delta(n, prev, at).replace(b'"100.5"', b'"1o0.5"')

    def decode(self, raw, at, line, snapshot=False):
        adapter = adapters.adapter_for(self.exchange)
        if snapshot and self.rest_snapshot:
            return adapter.decode_snapshot(raw, self.market, self.symbol, at, f"f:{line}",
                                           self.exchange)
        return adapter.decode_message(raw, at, f"f:{line}", self.url_market, self.exchange,
                                      channels=getattr(self, "channels", None))

    url_market = None


class Okx(Venue):
    exchange, market, symbol, step = "okx", "spot", "BTC-USDT", 7

    def _book(self, action, seq, prev, at, level):
        return js({"arg": {"channel": "books", "instId": self.symbol}, "action": action,
                   "data": [{"asks": [[level, "1", "0", "1"]], "bids": [["99.5", "2", "0", "1"]],
                             "ts": str(at), "checksum": 0, "seqId": seq, "prevSeqId": prev}]})

    def snapshot(self, n, at):
        return self._book("snapshot", n, -1, at, "101")

    def delta(self, n, prev, at):
        return self._book("update", n, prev, at, "100.5")


class Bybit(Venue):
    exchange, market, symbol, url_market = "bybit", "linear", "BTCUSDT", "linear"

    def _msg(self, kind, u, at, level):
        return js({"topic": f"orderbook.50.{self.symbol}", "type": kind, "ts": at,
                   "data": {"s": self.symbol, "b": [["99.5", "2"]], "a": [[level, "1"]], "u": u,
                            "seq": u * 10}, "cts": at})

    def snapshot(self, n, at):
        return self._msg("snapshot", n, at, "101")

    def delta(self, n, prev, at):
        return self._msg("delta", n, at, "100.5")


class Deribit(Venue):
    exchange, market, symbol, step = "deribit", "future", "BTC-PERPETUAL", 13

    def _msg(self, kind, change, prev, at, price):
        data = {"type": kind, "timestamp": at, "instrument_name": self.symbol, "change_id": change,
                "bids": [["new", 99.5, 20.0]], "asks": [["change", price, 10.0]]}
        if prev is not None:
            data["prev_change_id"] = prev
        return js({"jsonrpc": "2.0", "method": "subscription",
                   "params": {"channel": f"book.{self.symbol}.raw", "data": data}})

    def snapshot(self, n, at):
        return self._msg("snapshot", n, None, at, 101)

    def delta(self, n, prev, at):
        return self._msg("change", n, prev, at, 100.5)

    def bad_price(self, n, prev, at):
        return self.delta(n, prev, at).replace(b"100.5", b'"x"')


class GateIo(Venue):
    exchange, market, symbol, url_market, rest_snapshot = "gateio", "spot", "BTC_USDT", "spot", True

    def snapshot(self, n, at):
        return js({"id": n, "current": at, "update": at, "asks": [["101", "1"]], "bids": [["99.5", "2"]]})

    def delta(self, n, prev, at, last=None):
        """`last`: the update's last id (a range n..last; default n)."""
        return js({"time": at // 1000, "channel": "spot.order_book_update", "event": "update",
                   "result": {"t": at, "e": "depthUpdate", "E": at // 1000, "s": self.symbol,
                              "U": n, "u": n if last is None else last, "b": [],
                              "a": [["100.5", "1"]]}})


class KuCoin(Venue):
    exchange, market, symbol, url_market, rest_snapshot = "kucoin", "spot", "BTC-USDT", "spot", True

    def snapshot(self, n, at):
        return js({"code": "200000", "data": {"time": at, "sequence": str(n),
                                              "bids": [["99.5", "2"]], "asks": [["101", "1"]]}})

    def delta(self, n, prev, at, last=None):
        """`last`: the update's last id (a range n..last; default n)."""
        return js({"type": "message", "topic": f"/market/level2:{self.symbol}",
                   "subject": "trade.l2update",
                   "data": {"sequenceStart": n, "sequenceEnd": n if last is None else last,
                            "symbol": self.symbol,
                            "changes": {"asks": [["100.5", "1", str(n)]], "bids": [["0", "0", str(n)]]}}})


class KrakenFutures(Venue):
    exchange, market, symbol = "kraken_futures", "futures_inverse", "PI_XBTUSD"

    def snapshot(self, n, at):
        return js({"feed": "book_snapshot", "product_id": self.symbol, "timestamp": at, "seq": n,
                   "bids": [{"price": 99.5, "qty": 20.0}], "asks": [{"price": 101, "qty": 10.0}]})

    def delta(self, n, prev, at):
        return js({"feed": "book", "product_id": self.symbol, "side": "sell", "seq": n,
                   "price": "100.5", "qty": 1.0, "timestamp": at})


class Htx(Venue):
    exchange, market, symbol, url_market, step = "htx", "spot", "btcusdt", "spot", 5

    def snapshot(self, n, at):
        return js({"id": "1", "rep": f"market.{self.symbol}.mbp.150", "status": "ok",
                   "data": {"seqNum": n, "bids": [[99.5, 2]], "asks": [[101, 1]]}})

    def delta(self, n, prev, at):
        return js({"ch": f"market.{self.symbol}.mbp.150", "ts": at,
                   "tick": {"seqNum": n, "prevSeqNum": prev, "bids": [], "asks": [["100.5", 1]]}})


class Bitget(Venue):
    exchange, market, symbol, step = "bitget", "spot", "BTCUSDT", 1

    def _msg(self, action, seq, pseq, at, level):
        return js({"action": action, "arg": {"instType": "SPOT", "channel": "books", "instId": self.symbol},
                   "data": [{"asks": [[level, "1"]], "bids": [["99.5", "2"]], "ts": str(at),
                             "checksum": 0, "seq": seq, "pseq": pseq}]})

    def snapshot(self, n, at):
        return self._msg("snapshot", n, 0, at, "101")

    def delta(self, n, prev, at):
        return self._msg("update", n, prev, at, "100.5")


class Kraken(Venue):
    exchange, market, symbol, checked = "kraken", "spot", "XBT/USD", False

    def snapshot(self, n, at):
        return js([42, {"as": [["101.0", "1.0", "1.0"]], "bs": [["99.5", "2.0", "1.0"]]}, "book-10", self.symbol])

    def delta(self, n, prev, at):
        return js([42, {"a": [["100.5", "1.0", "1.0"]], "c": "1"}, "book-10", self.symbol])


class Coinbase(Venue):
    exchange, market, symbol, checked = "coinbase", "spot", "BTC-USD", False

    def snapshot(self, n, at):
        return js({"type": "snapshot", "product_id": self.symbol, "bids": [["99.5", "2"]], "asks": [["101", "1"]]})

    def delta(self, n, prev, at):
        return js({"type": "l2update", "product_id": self.symbol, "changes": [["sell", "100.5", "1"]],
                   "time": "2023-11-14T22:13:20.000000Z"})


class Bitfinex(Venue):
    exchange, market, symbol, checked = "bitfinex", "spot", "tBTCUSD", False
    channels = {7: "book|tBTCUSD|P0"}

    def snapshot(self, n, at):
        return js([7, [[99.5, 1, 2.0], [101, 1, -1.0]], n])

    def delta(self, n, prev, at):
        return js([7, ["100.5", 1, -1.0], n])


VENUES = [Okx(), Bybit(), Deribit(), GateIo(), KuCoin(), KrakenFutures(), Htx(), Bitget(), Kraken(),
          Coinbase(), Bitfinex()]
IDS = [venue.exchange for venue in VENUES]
FIRST = 5_000_000


def feed(venue, count=12, first=FIRST):
    """(snapshot, deltas): the venue's messages as (raw, receive time, line, is_snapshot), ids from
    `first` in the venue's steps."""
    ids = [first + venue.step * i for i in range(count + 1)]
    items = [(venue.snapshot(ids[0], T0), T0, 1, True)]
    for i in range(1, count + 1):
        at = T0 + STEP * i
        items.append((venue.delta(ids[i], ids[i - 1], at), at, i + 1, False))
    return items, ids


URLS = {"okx": "wss://ws.okx.com:8443/ws/v5/public", "bybit": "wss://stream.bybit.com/v5/public/linear",
        "deribit": "wss://www.deribit.com/ws/api/v2", "gateio": "wss://api.gateio.ws/ws/v4/",
        "kucoin": "wss://ws-api-spot.kucoin.com/endpoint", "kraken_futures": "wss://futures.kraken.com/ws/v1",
        "htx": "wss://api.huobi.pro/ws", "bitget": "wss://ws.bitget.com/v2/ws/public",
        "kraken": "wss://ws.kraken.com", "coinbase": "wss://ws-feed.exchange.coinbase.com",
        "bitfinex": "wss://api.bitfinex.com/ws/2"}
REST = {"gateio": "https://api.gateio.ws/api/v4/spot/order_book?currency_pair={}&limit=100&with_id=true",
        "kucoin": "https://api.kucoin.com/api/v3/market/orderbook/level2?symbol={}"}


def cryptofeed_capture(venue, items) -> list:
    """`items` (feed()'s, maybe faulted) as the lines of a cryptofeed raw capture."""
    out = [f"{URLS[venue.exchange]} <-> {T0 / 1000 - 1:.6f}".encode()]
    if venue.exchange == "bitfinex":
        out.append(f"{T0 / 1000 - 0.5:.6f}: ".encode() + js(
            {"event": "subscribed", "channel": "book", "chanId": 7, "symbol": venue.symbol, "prec": "P0"}))
    for raw, at, _, snap in items:
        if snap and venue.rest_snapshot:
            out.append(f"{REST[venue.exchange].format(venue.symbol)} -> {at / 1000:.6f}: ".encode() + raw)
        else:
            out.append(f"{at / 1000:.6f}: ".encode() + raw)
    return out
