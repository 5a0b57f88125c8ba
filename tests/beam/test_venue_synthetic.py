"""Every venue's rule shape with every fault class its rule defines, through the whole batch job:
tests/tooling/synthetic_venues.py writes one key per venue in the venue's wire format (small, medium
and large gaps, a resynced and a timed-out medium gap, a duplicate, a reorder, the venue's id reset,
a bad record) with the outcome each fault must have; the run's summary totals, gap rows and corrupt
periods must be exactly those. Once as cryptofeed raw captures (REST snapshot lines for Gate.io and
KuCoin, Bitfinex's `subscribed` reply), once as envelope lines (all but Bitfinex).
"""

import pytest

from beam_pipeline.cli import main
from tests.conftest import Outputs
from tests.tooling.synthetic import Expected, totals
from tests.tooling.synthetic_venues import (
    BAD_VENUE_RECORDS,
    RULE_OF,
    VENUE_OF,
    as_cryptofeed,
    as_envelopes,
    expected_summary,
    faults_for,
    generate_venue,
)

EXCHANGES = sorted(RULE_OF)
SPACING = 30


def _feed(exchange):
    faults = list(faults_for(exchange))
    return generate_venue(
        exchange, (len(faults) + 2) * SPACING, 1, faults, list(BAD_VENUE_RECORDS), spacing=SPACING
    )


def _ms(value):
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else value


def _merged_summary(parts) -> dict:
    """The summary of one run over several venues' files: the venues' summaries added up."""
    total = {}
    for summary in parts:
        for name, value in summary.items():
            if isinstance(value, bool):
                total[name] = total.get(name, True) and value
            elif isinstance(value, dict):
                into = total.setdefault(name, {})
                for inner, n in value.items():
                    into[inner] = into.get(inner, 0) + n
            else:
                total[name] = total.get(name, 0) + value
    return total


def _run(folder, fmt):
    expected = {}
    for exchange in EXCHANGES:
        if fmt == "envelope" and exchange == "bitfinex":
            continue
        items, exp = _feed(exchange)
        if fmt == "cryptofeed":
            lines, name = as_cryptofeed(exchange, items), f"{exchange}.ws.1.0"
        else:
            lines, name = as_envelopes(exchange, items), f"{exchange}.jsonl"
        (folder / name).write_bytes(b"\n".join(lines) + b"\n")
        expected[exchange] = (exp, expected_summary(exchange, exp, fmt == "cryptofeed"))
    out = folder / "out"
    glob = "*.ws.1.0" if fmt == "cryptofeed" else "*.jsonl"
    code = main(["--input", str(folder / glob), "--output", str(out)])
    return code, Outputs(out), expected


@pytest.fixture(scope="module")
def cryptofeed_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("venue_synthetic_cryptofeed"), "cryptofeed")


@pytest.fixture(scope="module")
def envelope_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("venue_synthetic_envelope"), "envelope")


CASES = [("cryptofeed", exchange) for exchange in EXCHANGES] + [
    ("envelope", exchange) for exchange in EXCHANGES if exchange != "bitfinex"
]


@pytest.mark.parametrize("fmt", ["cryptofeed", "envelope"])
def test_the_summary_is_the_expected_one(request, fmt):
    code, out, expected = request.getfixturevalue(f"{fmt}_run")
    want = _merged_summary(summary for _, summary in expected.values())
    assert code == 0
    assert totals(out.summary()) == want
    assert want["balanced"] and want["dead_letters"] == {"bad_price_level": len(expected)}


@pytest.mark.parametrize("fmt,exchange", CASES, ids=[f"{f}-{e}" for f, e in CASES])
def test_each_venue_gets_its_gaps_and_corrupt_periods(request, fmt, exchange):
    _, out, expected = request.getfixturevalue(f"{fmt}_run")
    exp = expected[exchange][0]
    gaps = [
        {name: _ms(value) for name, value in row.items()}
        for row in out.parquet_rows("gaps")
        if row["exchange"] == exchange
    ]
    periods = [
        {name: _ms(value) for name, value in row.items()}
        for row in out.parquet_rows("corrupt_periods")
        if row["exchange"] == exchange
    ]
    assert sorted(gaps, key=str) == sorted(exp.gaps, key=str)
    assert sorted(periods, key=str) == sorted(exp.corrupt_periods, key=str)
    rule = RULE_OF[exchange]
    assert bool(exp.gaps) == (rule != "none")  # without ids a lost message cannot be seen
    if rule == "connection_sequence":  # seen in the connection's numbers: no reset on one socket
        assert {g["cause"] for g in exp.gaps} == {"connection_break"}
    elif rule != "none":
        assert {g["gap_class"] for g in exp.gaps} >= {"medium", "reset"}


def test_a_fault_without_a_defined_outcome_is_refused():
    assert "small_gap" not in faults_for("okx")  # previous-link: a gap has no size
    assert "id_reset" not in faults_for("kraken")  # no ids: nothing to reset
    with pytest.raises(ValueError, match="no defined outcome"):
        generate_venue("okx", 100, faults=["large_gap"])
    assert isinstance(generate_venue("gateio", 60, faults=["small_gap"])[1], Expected)
    assert set(VENUE_OF) == set(RULE_OF)
