"""The delivery-lag record: the last lag and the worst of the last hour, kept as JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.delivery_lag import DeliveryLag

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_last_and_worst_of_the_hour() -> None:
    """`last` is the newest send; `worst` the largest within the past hour, to the minute."""
    lag = DeliveryLag()
    for minutes, seconds in ((0, 90.0), (10, 4.0), (30, 12.0), (31, 2.0)):
        lag = lag.observe(seconds, T0 + timedelta(minutes=minutes))
    assert (lag.last, lag.last_at) == (2.0, T0 + timedelta(minutes=31))
    assert lag.worst(T0 + timedelta(minutes=40)) == 90.0
    assert lag.worst(T0 + timedelta(minutes=61)) == 12.0  # the 90 s send is over an hour old
    assert lag.worst(T0 + timedelta(hours=3)) is None


def test_the_record_stays_small() -> None:
    """A day of sends keeps at most one maximum per minute of the last hour."""
    lag = DeliveryLag()
    for second in range(0, 24 * 3600, 7):
        lag = lag.observe(1.0, T0 + timedelta(seconds=second))
    assert len(lag.minutes) <= 60


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.floats(0, 1e6, allow_nan=False)),
        min_size=1,
        max_size=30,
    )
)
def test_json_round_trip(sends: list[tuple[int, float]]) -> None:
    """What the worker stores is what `status` reads back."""
    lag = DeliveryLag()
    for second, seconds in sorted(sends):
        lag = lag.observe(seconds, T0 + timedelta(seconds=second))
    assert DeliveryLag.from_json(lag.to_json()) == lag


@pytest.mark.parametrize(
    "stored", [None, "", "not json", "[]", "5", '{"last": 1}', '{"last":"x","last_at":null}']
)
def test_an_absent_or_damaged_record_reads_as_empty(stored: str | None) -> None:
    """A statistic must never stop delivery or `status`: damage reads as no record."""
    assert DeliveryLag.from_json(stored) == DeliveryLag()
