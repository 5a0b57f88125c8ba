"""The book package (core/books): exact levels, sanity checks, checksums with the documented test
vectors, and every checksum of the real OKX, Kraken and Bitget captures reproduced by a rebuild.

The captures are read by a small reader written here (not the venue adapters): it takes each
book message's levels and checksum as the venue sent them, keyed by instrument."""
import gzip
import json
import os
import zlib
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from beam_pipeline.core.books import Book, KeyBook, Profile, check, checksums, profile_of
from beam_pipeline.core.reasons import CorruptReason
from tests.conftest import REPO

EXCHANGES = os.path.join(os.path.dirname(REPO), "shared", "data", "exchanges")


# ---- the book ------------------------------------------------------------------------------

def test_levels_are_exact_and_zero_removes():
    book = Book()
    assert book.load([("100.10", "1"), ("100.0", "2")], [("100.2", "3"), ("101", "4")]) == []
    assert book.best_bid() == ("100.10", "1") and book.best_ask() == ("100.2", "3")
    # "100.00" is the level "100.0": replaced, keeping the text last sent
    assert book.apply([("100.00", "5"), ("100.10", "0.000")], []) == []
    assert book.top_bids() == [("100.00", "5")]
    assert book.top_asks(1) == [("100.2", "3")]
    assert book.levels()[0] == {Decimal("100"): Decimal(5)}
    # a delete of a level not in the book is normal by default (Binance)
    assert book.apply([("99", "0")], []) == []


def test_bad_levels_are_reported_and_not_applied():
    book = Book()
    problems = book.load([("100", "-1"), ("-5", "1"), ("abc", "1"), ("NaN", "1"), ("99", "1")], [])
    assert [p[0] for p in problems] == [CorruptReason.BAD_LEVEL] * 4
    assert book.top_bids() == [("99", "1")]


def test_strict_deletes_report_unknown_levels():
    book = Book(strict_deletes=True)
    book.load([("100", "1")], [])
    assert [p[0] for p in book.apply([("99", "0"), ("100", "0")], [])] == [
        CorruptReason.UNKNOWN_LEVEL]
    assert len(book) == 0


def test_depth_truncates_the_worst_levels():
    book = Book(depth=2)
    book.load([("1", "1"), ("2", "1"), ("3", "1")], [("4", "1"), ("5", "1"), ("6", "1")])
    assert [lv[0] for lv in book.top_bids()] == ["3", "2"]
    assert [lv[0] for lv in book.top_asks()] == ["4", "5"]
    book.apply([], [("3.5", "1")])
    assert [lv[0] for lv in book.top_asks()] == ["3.5", "4"]


def test_crossed_and_locked_books_after_a_complete_message():
    book, profile = Book(), Profile()
    assert check(book, profile, True, [("100", "1")], [("101", "1")]) == ([], False)
    # a message that crosses on its way through but ends uncrossed is fine
    assert check(book, profile, False, [("101.5", "1"), ("101.5", "0")], [])[0] == []
    problems, _ = check(book, profile, False, [("101", "1")], [])         # locked
    assert [p[0] for p in problems] == [CorruptReason.CROSSED_BOOK]


# ---- checksums: the documented vectors ---------------------------------------------------------

def test_okx_documented_vectors():
    bids, asks = [("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]
    assert checksums.okx_string(bids, asks) == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert checksums.okx(bids, asks) == -1881014294
    # the longer side's extra levels are appended
    bids, asks = [("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]
    assert checksums.okx_string(bids, asks) == "3366.1:7:3366.8:9:3368:8:3372:8"
    assert checksums.okx(bids, asks) == 831078360
    assert checksums.bitget(bids, asks) == 831078360


def test_kraken_documented_vector():
    asks = [(f"0.0{p}", "0.00000500") for p in
            ("5005", "5010", "5015", "5020", "5025", "5030", "5035", "5040", "5045", "5050")]
    bids = [(f"0.0{p}", "0.00000500") for p in
            ("5000", "4995", "4990", "4980", "4975", "4970", "4965", "4960", "4955", "4950")]
    assert checksums.kraken(bids, asks) == 974947235
    book = Book()
    book.load(list(reversed(bids)), asks)
    assert checksums.of_book("kraken", book) == 974947235


def test_bitfinex_string_negates_asks():
    bids, asks = [("100", "2")], [("101", "3")]
    crc = zlib.crc32(b"100:2:101:-3")
    assert checksums.bitfinex(bids, asks) == (crc - 2**32 if crc >= 2**31 else crc)


def test_okx_zero_means_not_sent():
    book = Book()
    book.load([("1", "1")], [("2", "1")])
    assert checksums.matches("okx", book, 0) is None
    assert checksums.matches("okx", book, None) is None
    assert checksums.matches("okx", book, checksums.of_book("okx", book)) is True


# ---- real captures, through a small standalone reader ---------------------------------------

def _lines(name):
    with gzip.open(os.path.join(EXCHANGES, name), "rt") as f:
        for number, line in enumerate(f, 1):
            if not line[:1].isdigit():
                continue                               # connect line, or what the client sent
            stamp, _, frame = line.partition(": ")
            yield number, int(float(stamp) * 1000), frame


def okx_like_messages(name):
    """OKX v5 / Bitget v1 `books`: (key, line, time, snapshot?, bids, asks, checksum)."""
    for number, recv, frame in _lines(name):
        msg = json.loads(frame)
        if not isinstance(msg, dict) or msg.get("arg", {}).get("channel") != "books" \
                or "action" not in msg:
            continue
        for data in msg["data"]:
            yield (msg["arg"]["instId"], number, recv, msg["action"] == "snapshot",
                   [lv[:2] for lv in data["bids"]], [lv[:2] for lv in data["asks"]],
                   data.get("checksum"))


def kraken_messages(name):
    """Kraken spot v1 `book-N`: one message per frame, its a/b dicts applied in order."""
    for number, recv, frame in _lines(name):
        msg = json.loads(frame)
        if not isinstance(msg, list) or not str(msg[-2]).startswith("book"):
            continue
        parts = msg[1:-2]
        if "as" in parts[0] or "bs" in parts[0]:
            yield (msg[-1], number, recv, True, [lv[:2] for lv in parts[0].get("bs", [])],
                   [lv[:2] for lv in parts[0].get("as", [])], None)
            continue
        bids = [lv[:2] for p in parts for lv in p.get("b", [])]
        asks = [lv[:2] for p in parts for lv in p.get("a", [])]
        checksum = next((int(p["c"]) for p in parts if "c" in p), None)
        yield msg[-1], number, recv, False, bids, asks, checksum


def rebuild(messages, profile, alter=None):
    """Replays `messages` into one KeyBook per key; `alter(i, message)` may change or drop (None)
    the i-th message. Returns (books, periods [(key, BookProblem)], checksum-bearing count)."""
    books, periods, bearing = {}, [], 0
    for i, message in enumerate(messages):
        if alter is not None:
            message = alter(i, message)
            if message is None:
                continue
        key, number, recv, snapshot, bids, asks, checksum = message
        kb = books.setdefault(key, KeyBook(profile))
        if snapshot:
            periods += [(key, p) for p in kb.snapshot(bids, asks, number, number, recv, checksum)]
        else:
            kb.delta(bids, asks, number, number, recv, checksum)
        bearing += checksum is not None and checksum != checksums.NOT_SENT
    for key, kb in books.items():
        periods += [(key, p) for p in kb.close()]
    return books, periods, bearing


CAPTURES = {
    # name: (reader, profile, checksum-bearing messages the independent rebuild counted)
    "OKX.ws.1.0.gz": (okx_like_messages, profile_of("okx"), 290),
    "KRAKEN.ws.50.0.gz": (kraken_messages, Profile(depth=1000, checksum="kraken"), 4269),
    "BITGET.ws.1.0.gz": (okx_like_messages, profile_of("bitget"), 443),   # every books message
}


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def capture(request):
    reader, profile, expected = CAPTURES[request.param]
    return request.param, list(reader(request.param)), profile, expected


def test_every_checksum_of_the_real_captures_matches(capture):
    name, messages, profile, expected = capture
    books, periods, bearing = rebuild(messages, profile)
    verified = sum(kb.counts.checksum_verified for kb in books.values())
    assert bearing == expected
    assert periods == []
    assert verified == bearing, f"{name}: {verified} of {bearing} checksums match"


def _target(messages, profile, skip=20):
    """(index, side, level index) of a delta with a checksum that sets a level among the best 10
    of its side (so every algorithm sees it), the skip-th such."""
    books, found = {}, 0
    for i, (key, _, _, snapshot, bids, asks, checksum) in enumerate(messages):
        book = books.setdefault(key, profile.new_book())
        if snapshot:
            book.load(bids, asks)
            continue
        book.apply(bids, asks)
        for side, levels, top in ((4, bids, book.top_bids(10)), (5, asks, book.top_asks(10))):
            for j, level in enumerate(levels):
                if checksum and tuple(level) in top:
                    found += 1
                    if found > skip:
                        return i, side, j
                    break


def test_one_altered_size_gives_one_mismatch_at_that_message(capture):
    name, messages, profile, _ = capture
    target, side, j = _target(messages, profile)
    key = messages[target][0]

    def alter(i, m):
        if i != target:
            return m
        levels = [list(lv) for lv in m[side]]
        levels[j][1] = str(Decimal(levels[j][1]) + 1)
        return m[:side] + (levels,) + m[side + 1:]

    _, periods, _ = rebuild(messages, profile, alter)
    assert [(k, p.reason, p.start_id) for k, p in periods] == [
        (key, "checksum_mismatch", messages[target][1])]


def test_one_dropped_update_gives_one_mismatch_at_the_next_message(capture):
    name, messages, profile, _ = capture
    target, _, _ = _target(messages, profile)
    key = messages[target][0]
    following = next(m for m in messages[target + 1:] if m[0] == key and m[6])
    _, periods, _ = rebuild(messages, profile, lambda i, m: None if i == target else m)
    assert [(k, p.reason, p.start_id) for k, p in periods] == [
        (key, "checksum_mismatch", following[1])]


# ---- the cached keys and best levels agree with a plain rebuild --------------------------------

_PRICE_TEXTS = st.sampled_from(["99", "99.0", "99.00", "99.5", "99.50", "100", "100.0", "100.25",
                                "101", "101.000", "98.75", "102.5", "97"])
_SIZE_TEXTS = st.sampled_from(["0", "0.000", "1", "2.5", "0.001", "10"])
_MESSAGES = st.lists(st.tuples(st.lists(st.tuples(_PRICE_TEXTS, _SIZE_TEXTS), max_size=6),
                               st.lists(st.tuples(_PRICE_TEXTS, _SIZE_TEXTS), max_size=6)),
                     min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(_MESSAGES, st.sampled_from([None, 3]))
def test_the_book_equals_a_plain_decimal_rebuild(messages, depth):
    """Message after message (the same prices in different texts, deletes, re-inserts, a depth
    cut), the book's best levels, crossed() and every level equal a dict of Decimals rebuilt
    here (the book keys price texts through a cache and keeps its best keys as levels come and
    go)."""
    book = Book(depth)
    reference = ({}, {})
    for bids, asks in messages:
        assert book.apply(bids, asks) == []
        for side, levels, best_first in ((reference[0], bids, True), (reference[1], asks, False)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, size)
            if depth is not None:
                for price in sorted(side, reverse=best_first)[depth:]:
                    del side[price]
        want_bids = [reference[0][p] for p in sorted(reference[0], reverse=True)]
        want_asks = [reference[1][p] for p in sorted(reference[1])]
        assert book.top_bids() == want_bids and book.top_asks() == want_asks
        assert book.best_bid() == (want_bids[0] if want_bids else None)
        assert book.best_ask() == (want_asks[0] if want_asks else None)
        assert book.crossed() == bool(want_bids and want_asks and Decimal(want_bids[0][0]) >=
                                      Decimal(want_asks[0][0]))
