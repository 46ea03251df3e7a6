"""Request-field parsing shared by every route."""

from __future__ import annotations

import math

import pytest

from app.simulator.wire import ApiError, parse_duration, parse_keep_alive


@pytest.mark.parametrize(("value", "seconds"), [
    (None, 42.0), (0, 0.0), (30, 30.0), (1.5, 1.5), ("5m", 300.0), ("1h30m", 5400.0), ("0", 0.0),
    ("300ms", 0.3), ("-1", math.inf), ("-1s", math.inf), (-1, math.inf), ("300", 300.0), ("", 42.0),
])
def test_keep_alive_values(value, seconds):
    assert parse_keep_alive(value, 42.0) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "5 minutes", True, [], {"m": 5}, "m5"])
def test_bad_keep_alive_is_a_400(value):
    with pytest.raises(ApiError) as caught:
        parse_keep_alive(value, None)
    assert caught.value.status == 400


def test_go_duration_errors():
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("x")
    assert parse_duration("2h45m30.5s") == pytest.approx(9930.5)
