"""cascade.tables: the shared table layout and missing-number formatting."""

import json
import math

from cascade.tables import fmt, format_table, is_missing, nan_to_none


def test_format_table_aligns_columns_under_a_rule():
    text = format_table(["name", "tok/s"], [["target-only", 12.5], ["v3", None]])
    assert text.splitlines() == [
        "name         tok/s",
        "-----------  -----",
        "target-only  12.5",
        "v3           None",
    ]


def test_format_table_with_no_rows_is_the_header_and_rule():
    assert format_table(["a", "bb"], []) == "a  bb\n-  --"


def test_fmt_prints_missing_numbers_as_a_dash():
    assert fmt(1.23456, ".2f") == "1.23"
    assert fmt(1.5, ".2f", "x") == "1.50x"
    assert fmt(-0.25, "+.3f") == "-0.250"
    assert fmt(3, ".1f") == "3.0"
    assert fmt(None, ".2f") == "-" and fmt(math.nan, ".2f", "x") == "-"
    assert fmt(math.inf, ".1f") == "inf"  # infinite is a value, not missing
    assert is_missing(None) and is_missing(math.nan) and not is_missing(0.0) and not is_missing("nan")


def test_nan_to_none_reaches_into_dicts_and_lists():
    data = {"a": math.nan, "b": [1.0, math.nan, {"c": math.nan, "d": "x"}], "e": 2, "f": None}
    out = nan_to_none(data)
    assert out == {"a": None, "b": [1.0, None, {"c": None, "d": "x"}], "e": 2, "f": None}
    json.dumps(out, allow_nan=False)  # valid JSON now
    assert math.isnan(data["a"])  # the input is left as it was
    assert nan_to_none(math.nan) is None and nan_to_none(0.5) == 0.5
