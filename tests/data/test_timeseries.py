"""load_time_series, load_bundled_series and TimeSeriesWindowDataset."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from selfgen.data.timeseries import TimeSeries, TimeSeriesWindowDataset, load_bundled_series, load_time_series


def write_csv(path, text):
    path.write_text(text.strip() + "\n")
    return path


LONG_CSV = """
item_id,timestamp,target
b,2024-01-01,10
b,2024-01-02,11
b,2024-01-03,12
a,2024-01-03,3
a,2024-01-01,1
a,2024-01-02,
a,2024-01-04,4
"""


def test_long_csv(tmp_path):
    series = load_time_series(write_csv(tmp_path / "long.csv", LONG_CSV))
    assert [s.item_id for s in series] == ["b", "a"]  # file order
    b, a = series
    assert b.start == pd.Timestamp("2024-01-01") and b.freq == "D" and b.values.dtype == np.float32
    np.testing.assert_array_equal(b.values, [10, 11, 12])
    np.testing.assert_array_equal(a.values, [1, 2, 3, 4])  # sorted, the empty cell interpolated
    assert list(a.index) == list(pd.date_range("2024-01-01", periods=4, freq="D"))


@pytest.mark.parametrize("fill_na, expected", [("ffill", [1, 1, 3, 4]), ("zero", [1, 0, 3, 4])])
def test_fill_na_modes(tmp_path, fill_na, expected):
    a = load_time_series(write_csv(tmp_path / "long.csv", LONG_CSV), fill_na=fill_na)[1]
    np.testing.assert_array_equal(a.values, expected)


def test_fill_na_raise_names_item_and_count(tmp_path):
    with pytest.raises(ValueError, match=r"long.csv: item 'a' has 1 missing value\(s\)"):
        load_time_series(write_csv(tmp_path / "long.csv", LONG_CSV), fill_na="raise")


def test_wide_csv_trims_edges_and_fills_gaps_on_a_given_grid(tmp_path):
    path = write_csv(
        tmp_path / "wide.csv",
        """
month,north,south
2020-01-01,1.5,
2020-02-01,2.5,7
2020-04-01,4.5,9
""",
    )
    north, south = load_time_series(path, timestamp_column="month", freq="MS")
    assert (north.item_id, north.freq, north.start) == ("north", "MS", pd.Timestamp("2020-01-01"))
    np.testing.assert_array_equal(north.values, [1.5, 2.5, 3.5, 4.5])  # March was missing: interpolated
    assert south.start == pd.Timestamp("2020-02-01")  # leading empty cell trimmed
    np.testing.assert_array_equal(south.values, [7, 8, 9])


def test_parquet_round_trip_and_missing_engine(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=5, freq="h"), "load": np.arange(5.0)})
    frame.to_parquet(tmp_path / "load.parquet")
    (series,) = load_time_series(tmp_path / "load.parquet")
    assert (series.item_id, series.freq) == ("load", "h")
    np.testing.assert_array_equal(series.values, np.arange(5))

    def no_engine(path):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(ImportError, match=r"needs a parquet engine; install pyarrow"):
        load_time_series(tmp_path / "load.parquet")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"time-series file {tmp_path / 'nope.csv'} not found")):
        load_time_series(tmp_path / "nope.csv")


def test_corrupt_file(tmp_path):
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00\x81 binary \x00\x9c junk")
    with pytest.raises(ValueError, match=r"bad.csv: could not read as csv"):
        load_time_series(tmp_path / "bad.csv")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: could not read as parquet"):
        load_time_series(tmp_path / "bad.parquet")
    (tmp_path / "data.xlsx").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported file type '.xlsx'; expected a .csv or .parquet file"):
        load_time_series(tmp_path / "data.xlsx")


def test_missing_columns_name_the_schema(tmp_path):
    path = write_csv(tmp_path / "s.csv", "item_id,time,target\na,2020-01-01,1")
    message = (
        r"s.csv: missing column\(s\) \['timestamp'\]; "
        r"expected long layout: columns 'item_id', 'timestamp', 'target'"
    )
    with pytest.raises(ValueError, match=message):
        load_time_series(path)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['timestamp'\]; expected wide layout"):
        load_time_series(write_csv(tmp_path / "w.csv", "date,x\n2020-01-01,1"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['<one column per item>'\]; expected wide layout"):
        load_time_series(write_csv(tmp_path / "w1.csv", "timestamp\n2020-01-01"))


def test_renamed_target_column_is_named_with_the_columns_found(tmp_path):
    path = write_csv(tmp_path / "s.csv", "item_id,timestamp,value\na,2020-01-01,1\na,2020-01-02,2\na,2020-01-03,3")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['target'\].*found columns \['item_id', 'timestamp', 'value'\]"):
        load_time_series(path)
    (series,) = load_time_series(path, target_column="value")
    np.testing.assert_array_equal(series.values, [1, 2, 3])


def test_a_few_gaps_are_still_filled_on_a_given_grid(tmp_path):
    days = [1, 2, 3, 5, 7, 8, 9, 10]  # 8 rows on a 10-day grid: two missing days are filled, not refused
    path = write_csv(tmp_path / "s.csv", "timestamp,x\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in days))
    (series,) = load_time_series(path, freq="D")
    np.testing.assert_allclose(series.values, np.arange(1, 11))


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        (
            "item_id,timestamp,target\na,2020-01-01,1\na,someday,2",
            {},
            r"unparseable timestamp 'someday' in column 'timestamp' \(data row 2\)",
        ),
        (
            "item_id,timestamp,target\na,2020-01-01,1\na,2020-01-02,lots",
            {},
            r"non-numeric value 'lots' in column 'target' for item 'a' \(data row 2\)",
        ),
        (
            "item_id,timestamp,target\nz,2020-01-01,1\nz,2020-01-01,2",
            {},
            r"item 'z' has duplicate timestamp 2020-01-01 00:00:00 \(data row 2\)",
        ),
        (
            "item_id,timestamp,target\nq,2020-01-01,1\nq,2020-01-02,2\nq,2020-01-05,3",
            {},
            r"cannot infer the frequency of item 'q' \(3 timestamps",
        ),
        (
            "item_id,timestamp,target\nq,2020-01-01,1\nq,2020-01-02,2",
            {},
            r"cannot infer the frequency of item 'q' \(2 timestamps",
        ),
        (
            "item_id,timestamp,target\nd,2020-01-01,1\nd,2020-01-02,2\nd,2020-01-03,3",
            {"freq": "h"},
            r"item 'd' does not match freq='h' \(its spacing is D\)",
        ),
        (
            "item_id,timestamp,target\nd,2020-01-15,1\nd,2020-02-15,2",
            {"freq": "MS"},
            r"item 'd' does not match freq='MS' \(timestamp 2020-01-15 00:00:00 is off the grid\)",
        ),
        ("item_id,timestamp,target\ne,2020-01-01,\ne,2020-01-02,", {"freq": "D"}, r"item 'e' has no numeric values"),
        (
            "item_id,timestamp,target\na,2020-01-01,1\na,2020-01-02,inf\na,2020-01-03,3",
            {},
            r"infinite value 'inf' in column 'target' for item 'a' \(data row 2\)",
        ),
        (
            "item_id,timestamp,target\na,2020-01-01,1\na,2020-01-02,2\na,2020-01-03,1e309",
            {},
            r"infinite value 'inf' in column 'target' for item 'a' \(data row 3\)",
        ),
        (
            "timestamp,x\n2020-01-01,1\n2020-01-02,-inf\n2020-01-03,3",
            {},
            r"infinite value '-inf' in column 'x' for item 'x' \(data row 2\)",
        ),
        (
            "item_id,timestamp,target\n" + "".join(f"a,2020-01-{day:02d},{day}\n" for day in range(1, 10)) + "a,2200-01-10,10",
            {"freq": "D"},
            r"item 'a' has 10 rows but its timestamps span 65754 steps of freq='D': the gap before timestamp "
            r"2200-01-10 00:00:00 \(data row 10\) alone would add 65744 filled points",
        ),
        (
            "timestamp,x\n" + "".join(f"{step},{step}\n" for step in range(10)),
            {},
            r"column 'timestamp' holds numbers \(e.g. '0'\), not dates; pandas would read them as nanoseconds",
        ),
    ],
)
def test_bad_contents_name_file_item_and_problem(tmp_path, text, kwargs, message):
    path = write_csv(tmp_path / "series.csv", text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*{message}"):
        load_time_series(path, **kwargs)


@pytest.mark.parametrize(
    "name, length, freq, start",
    [
        ("co2", 2284, "W-SAT", "1958-03-29"),
        ("sunspots", 309, "YS-JAN", "1700-01-01"),
        ("elnino", 61 * 12, "MS", "1950-01-01"),
        ("nile", 100, "YS-JAN", "1871-01-01"),
        ("macrodata", 203, "QS-JAN", "1959-01-01"),
    ],
)
def test_bundled_series(name, length, freq, start):
    (series,) = load_bundled_series(name)
    assert (len(series), series.freq, series.start) == (length, freq, pd.Timestamp(start))
    assert series.values.dtype == np.float32 and np.isfinite(series.values).all()


def test_bundled_values_and_unknown_name():
    (elnino,) = load_bundled_series("elnino")
    np.testing.assert_allclose(elnino.values[:2], [23.11, 24.20], rtol=1e-6)  # Jan, Feb 1950
    np.testing.assert_allclose(elnino.values[12], 24.19, rtol=1e-6)  # Jan 1951
    with pytest.raises(ValueError, match=r"unknown bundled series 'airline'; available: \['co2', 'elnino'"):
        load_bundled_series("airline")


def make_series(lengths):
    return [
        TimeSeries(f"s{i}", "2020-01-01", "D", np.arange(n, dtype=np.float32) + 100 * i) for i, n in enumerate(lengths)
    ]


def test_train_windows_enumerate_and_hold_out_the_test_tail():
    dataset = TimeSeriesWindowDataset(make_series([10, 7]), window_length=4, test_length=2)
    assert len(dataset) == (10 - 2 - 4 + 1) + (7 - 2 - 4 + 1)
    items = [dataset[i] for i in range(len(dataset))]
    assert [(x["item_index"], x["start_index"]) for x in items[-3:]] == [(0, 4), (1, 0), (1, 1)]
    for item in items:
        series = dataset.series[item["item_index"]]
        assert item["start_index"] + 4 <= len(series) - 2
        assert item["values"].dtype == torch.float32 and item["values"].shape == (4,)
        np.testing.assert_array_equal(
            item["values"].numpy(), series.values[item["start_index"] : item["start_index"] + 4]
        )
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_test_split_is_the_final_window_and_all_uses_everything():
    test = TimeSeriesWindowDataset(make_series([10, 7]), window_length=4, split="test", test_length=2)
    assert [(test[i]["item_index"], test[i]["start_index"]) for i in range(len(test))] == [(0, 6), (1, 3)]
    assert len(TimeSeriesWindowDataset(make_series([10, 7]), window_length=4, split="all")) == 7 + 4


def test_sampled_windows_are_reproducible():
    series = make_series([50, 30])
    first = TimeSeriesWindowDataset(series, window_length=5, num_windows_per_epoch=20, seed=3)
    again = TimeSeriesWindowDataset(series, window_length=5, num_windows_per_epoch=20, seed=3)
    other = TimeSeriesWindowDataset(series, window_length=5, num_windows_per_epoch=20, seed=4)
    assert len(first) == 20
    picks = [(first[i]["item_index"], first[i]["start_index"]) for i in range(20)]
    assert picks == [(again[i]["item_index"], again[i]["start_index"]) for i in range(20)]
    assert picks == [(first[i]["item_index"], first[i]["start_index"]) for i in range(20)]
    assert picks != [(other[i]["item_index"], other[i]["start_index"]) for i in range(20)]
    assert {item for item, _ in picks} == {0, 1}


def test_window_dataset_errors():
    with pytest.raises(
        ValueError, match=r"series 's1' has 7 points; split='train' needs at least 9 \(window_length=6, held out=3\)"
    ):
        TimeSeriesWindowDataset(make_series([10, 7]), window_length=6, test_length=3)
    with pytest.raises(ValueError, match=r"split='test' needs test_length > 0"):
        TimeSeriesWindowDataset(make_series([10]), window_length=4, split="test")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\)"):
        TimeSeriesWindowDataset(make_series([10]), window_length=4, split="valid")
    with pytest.raises(ValueError, match=r"TimeSeries 'x': values must be a non-empty 1-D array"):
        TimeSeries("x", "2020-01-01", "D", np.zeros((2, 2)))


def test_bad_arguments(tmp_path):
    path = write_csv(tmp_path / "long.csv", LONG_CSV)
    with pytest.raises(ValueError, match=r"freq must be a pandas frequency alias such as 'D'.*got 'fortnightly'"):
        load_time_series(path, freq="fortnightly")
    with pytest.raises(ValueError, match=r"fill_na must be one of \('interpolate', 'ffill', 'zero', 'raise'\)"):
        load_time_series(path, fill_na="mean")
    with pytest.raises(ValueError, match=r"layout must be one of"):
        load_time_series(path, layout="tall")
