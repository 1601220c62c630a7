"""The JSON log line: its time is what datetime writes, to the millisecond, in UTC."""

from __future__ import annotations

import datetime
import json
import logging

import pytest
from paygate.common.logs import JsonFormatter

MOMENTS = [
    1715996061.0,
    1715996061.2839994,  # rounds down at the microsecond, as datetime rounds it
    1715996061.9999996,  # rounds up into the next second
    1715996061.0005,
    1715996062.999,
]


@pytest.mark.parametrize("created", MOMENTS)
def test_a_lines_time_is_datetimes_isoformat_in_milliseconds(created: float) -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "paygate.test", logging.INFO, __file__, 1, "hello %s", ("you",), None
    )
    record.created = created
    record.fields = {"amount": 5, "when": datetime.date(2026, 1, 2)}  # type: ignore[attr-defined]
    line = json.loads(formatter.format(record))
    expected = datetime.datetime.fromtimestamp(created, datetime.UTC)
    assert line["time"] == expected.isoformat(timespec="milliseconds")
    assert line["msg"] == "hello you" and line["level"] == "info"
    assert line["amount"] == 5 and line["when"] == "2026-01-02"  # what is not JSON, as text
