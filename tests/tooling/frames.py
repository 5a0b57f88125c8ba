"""Small Binance frames for tests that write capture fixtures of their own."""
import json


def js(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def depth(symbol, first, last, at=1_700_000_001_500, prev=None):
    message = {"e": "depthUpdate", "E": at, "s": symbol, "U": first, "u": last,
               "b": [["100.00", "1.5"]], "a": [["100.10", "0"]]}
    if prev is not None:
        message.update(pu=prev, T=at - 2)
    return message
