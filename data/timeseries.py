"""Time series from the user's CSV/parquet files or from statsmodels' bundled data sets, and a
dataset of fixed-length windows over them (what TSDiff trains on).

Two file layouts are read:

- long: columns ``item_id, timestamp, target``, one row per (item, time);
- wide: a ``timestamp`` column and one numeric column per item (leading and trailing empty cells of
  an item are trimmed, so items of different lengths can share one file).

Every item is validated up front (parseable timestamps, numeric targets, no duplicate timestamps, a
regular frequency) and placed on a regular grid; missing values and gaps are filled per ``fill_na``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.tseries.frequencies import to_offset
from torch.utils.data import Dataset

LAYOUTS = ("auto", "long", "wide")
FILL_NA = ("interpolate", "ffill", "zero", "raise")
SPLITS = ("train", "test", "all")


@dataclass
class TimeSeries:
    """One regularly sampled series: ``values[i]`` is observed at ``start + i * freq``."""

    item_id: str
    start: pd.Timestamp
    freq: str
    values: np.ndarray

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 1 or len(self.values) == 0:
            raise ValueError(
                f"TimeSeries {self.item_id!r}: values must be a non-empty 1-D array, got shape {self.values.shape}"
            )
        self.start = pd.Timestamp(self.start)
        self.freq = to_offset(self.freq).freqstr

    def __len__(self) -> int:
        return len(self.values)

    @property
    def index(self) -> pd.DatetimeIndex:
        """The timestamps of ``values``."""
        return pd.date_range(self.start, periods=len(self), freq=self.freq)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def load_time_series(
    path: str | Path,
    layout: str = "auto",
    item_id_column: str = "item_id",
    timestamp_column: str = "timestamp",
    target_column: str = "target",
    freq: str | None = None,
    fill_na: str = "interpolate",
) -> list[TimeSeries]:
    """Read a long or wide CSV/parquet file into one :class:`TimeSeries` per item (in file order).

    ``freq`` (a pandas alias such as ``"D"``, ``"h"``, ``"MS"``) is inferred per item when not given;
    when given, every item must lie on that grid and gaps become missing values. ``fill_na`` fills
    missing values by linear interpolation, forward fill or zeros, or raises naming the item.
    """
    _check_choice("layout", layout, LAYOUTS)
    _check_choice("fill_na", fill_na, FILL_NA)
    offset = _parse_freq(freq)
    path = Path(path)
    table = _read_table(path)
    if layout == "auto":
        layout = "long" if item_id_column in table.columns else "wide"
    _check_columns(path, table, layout, item_id_column, timestamp_column, target_column)
    if layout == "long":
        long = _long_frame(path, table, item_id_column, timestamp_column, target_column)
    else:
        long = _wide_to_long(path, table, timestamp_column)
    return [
        _build_series(path, str(item), group, offset, fill_na, trim_edges=layout == "wide")
        for item, group in long.groupby("item", sort=False)
    ]


def _parse_freq(freq: str | None) -> pd.DateOffset | None:
    if freq is None:
        return None
    try:
        return to_offset(freq)
    except ValueError:
        raise ValueError(
            f"freq must be a pandas frequency alias such as 'D', 'h', 'W', 'MS', 'QS', 'YS'; got {freq!r}"
        ) from None


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"time-series file {path} not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected a .csv or .parquet file")
    try:
        table = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except ImportError as error:
        raise ImportError(f"reading {path} needs a parquet engine; install pyarrow ({error})") from None
    except (ValueError, OSError) as error:  # parser, encoding and parquet-format errors
        raise ValueError(f"{path}: could not read as {suffix[1:]} ({type(error).__name__}: {error})") from None
    if table.empty:
        raise ValueError(f"{path}: has no data rows")
    return table


def _check_columns(path: Path, table: pd.DataFrame, layout: str, item_id: str, timestamp: str, target: str) -> None:
    if layout == "long":
        required = [item_id, timestamp, target]
        schema = f"long layout: columns {item_id!r}, {timestamp!r}, {target!r} with one row per (item, time)"
    else:
        required = [timestamp] + ([] if len(table.columns) > 1 else ["<one column per item>"])
        schema = f"wide layout: a {timestamp!r} column and one numeric column per item"
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {schema}; found columns {list(table.columns)}")


def _long_frame(path: Path, table: pd.DataFrame, item_id: str, timestamp: str, target: str) -> pd.DataFrame:
    """Columns ``item, timestamp, target, row`` (``row``: 1-based data row in the file)."""
    items = table[item_id]
    if items.isna().any():
        raise ValueError(f"{path}: empty {item_id!r} in data row {_first_row(items.isna())}")
    return pd.DataFrame(
        {
            "item": items.astype(str),
            "timestamp": _parse_timestamps(path, table[timestamp], timestamp),
            "target": _parse_numbers(path, table[target], items.astype(str), target),
            "row": np.arange(1, len(table) + 1),
        }
    )


def _wide_to_long(path: Path, table: pd.DataFrame, timestamp: str) -> pd.DataFrame:
    timestamps = _parse_timestamps(path, table[timestamp], timestamp)
    frames = [
        pd.DataFrame(
            {
                "item": str(column),
                "timestamp": timestamps,
                "target": _parse_numbers(path, table[column], str(column), column),
                "row": np.arange(1, len(table) + 1),
            }
        )
        for column in table.columns
        if column != timestamp
    ]
    return pd.concat(frames, ignore_index=True)


def _first_row(mask: pd.Series) -> int:
    return int(np.argmax(mask.to_numpy())) + 1


def _parse_timestamps(path: Path, column: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise ValueError(
            f"{path}: column {name!r} holds numbers (e.g. {str(column.iloc[0])!r}), not dates; pandas would read them as "
            "nanoseconds since 1970. Expected dates such as 2020-01-31 (for yearly data write 2001-01-01)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": reported below instead
        parsed = pd.to_datetime(column, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = _first_row(bad)
        raise ValueError(
            f"{path}: unparseable timestamp {column.iloc[row - 1]!r} in column {name!r} (data row {row}); "
            "expected dates such as 2020-01-31 or 2020-01-31 12:00"
        )
    return parsed


def _parse_numbers(path: Path, column: pd.Series, items: pd.Series | str, name: str) -> pd.Series:
    """``column`` as float64 (empty cells as NaN); ``items`` is the item of each row, or the one item."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = (numbers.isna() & column.notna()) | np.isinf(numbers)
    if bad.any():
        row = _first_row(bad)
        item = items if isinstance(items, str) else items.iloc[row - 1]
        kind = "infinite" if np.isinf(numbers.iloc[row - 1]) else "non-numeric"
        raise ValueError(
            f"{path}: {kind} value {str(column.iloc[row - 1])!r} in column {name!r} for item "
            f"{item!r} (data row {row}); expected finite numbers (empty cells count as missing)"
        )
    return numbers.astype(np.float64)


def _build_series(
    path: Path, item: str, group: pd.DataFrame, freq: pd.DateOffset | None, fill_na: str, trim_edges: bool
) -> TimeSeries:
    group = group.sort_values("timestamp", kind="stable")
    duplicated = group["timestamp"].duplicated()
    if duplicated.any():
        first = group[duplicated].iloc[0]
        raise ValueError(
            f"{path}: item {item!r} has duplicate timestamp {first['timestamp']} (data row {first['row']})"
        )
    if trim_edges:
        group = _trim_missing_edges(group)
    index = pd.DatetimeIndex(group["timestamp"])
    grid = _regular_grid(path, item, index, freq)
    _check_gaps(path, item, group, grid)
    values = pd.Series(group["target"].to_numpy(), index=index).reindex(grid)
    return TimeSeries(item, grid[0], grid.freqstr, _fill_missing(path, item, values, fill_na))


def _trim_missing_edges(group: pd.DataFrame) -> pd.DataFrame:
    observed = group["target"].notna().to_numpy()
    if not observed.any():
        return group
    first, last = np.argmax(observed), len(observed) - np.argmax(observed[::-1])
    return group.iloc[first:last]


def _infer_offset(index: pd.DatetimeIndex) -> pd.DateOffset | None:
    if len(index) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pandas 3 announces an offset return type
        inferred = pd.infer_freq(index)
    return None if inferred is None else to_offset(inferred)


def _regular_grid(path: Path, item: str, index: pd.DatetimeIndex, freq: pd.DateOffset | None) -> pd.DatetimeIndex:
    """The regular timestamps from the item's first to its last observation."""
    inferred = _infer_offset(index)
    if freq is None:
        if inferred is None:
            raise ValueError(
                f"{path}: cannot infer the frequency of item {item!r} ({len(index)} timestamps, irregular or too few); "
                "pass freq= (e.g. 'D', 'h', 'MS'); gaps are then filled per fill_na"
            )
        return pd.date_range(index[0], periods=len(index), freq=inferred)
    grid = pd.date_range(index[0], index[-1], freq=freq)
    off_grid = ~index.isin(grid)
    if off_grid.any() or (inferred is not None and len(grid) != len(index)):
        found = (
            f"timestamp {index[off_grid][0]} is off the grid"
            if off_grid.any()
            else f"its spacing is {inferred.freqstr}"
        )
        raise ValueError(f"{path}: item {item!r} does not match freq={freq.freqstr!r} ({found})")
    return grid


MAX_FILL_RATIO = 2  # a grid this many times longer than the observed rows is a typo, not a few gaps


def _check_gaps(path: Path, item: str, group: pd.DataFrame, grid: pd.DatetimeIndex) -> None:
    """Refuse a grid that would invent more points than the item has rows (a year typo turns 10 daily
    rows into 65,000 interpolated ones), naming the row that ends the largest gap."""
    if len(grid) <= MAX_FILL_RATIO * len(group):
        return
    steps = grid.get_indexer(pd.DatetimeIndex(group["timestamp"]))
    largest = int(np.argmax(np.diff(steps))) + 1
    row = group.iloc[largest]
    raise ValueError(
        f"{path}: item {item!r} has {len(group)} rows but its timestamps span {len(grid)} steps of "
        f"freq={grid.freqstr!r}: the gap before timestamp {row['timestamp']} (data row {row['row']}) alone would "
        f"add {steps[largest] - steps[largest - 1] - 1} filled points. Check that timestamp (a typo?) or the freq"
    )


FILLERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "interpolate": lambda values: values.interpolate(limit_direction="both"),
    "ffill": lambda values: values.ffill().bfill(),
    "zero": lambda values: values.fillna(0.0),
}


def _fill_missing(path: Path, item: str, values: pd.Series, fill_na: str) -> np.ndarray:
    missing = int(values.isna().sum())
    if missing == len(values):
        raise ValueError(f"{path}: item {item!r} has no numeric values")
    if missing and fill_na == "raise":
        raise ValueError(
            f"{path}: item {item!r} has {missing} missing value(s) (empty cells or gaps in its timestamps); "
            "pass fill_na='interpolate', 'ffill' or 'zero' to fill them"
        )
    return (FILLERS[fill_na](values) if missing else values).to_numpy(dtype=np.float32)


def _annual(item: str, years: pd.Series, values: pd.Series) -> TimeSeries:
    return TimeSeries(item, pd.Timestamp(year=int(years.iloc[0]), month=1, day=1), "YS", values.to_numpy())


def _co2(data: pd.DataFrame) -> TimeSeries:
    values = data["co2"].interpolate(limit_direction="both")
    return TimeSeries("co2", data.index[0], "W-SAT", values.to_numpy())


def _elnino(data: pd.DataFrame) -> TimeSeries:
    monthly = data.drop(columns="YEAR").to_numpy().ravel()  # year-major, so months in time order
    return TimeSeries("elnino", pd.Timestamp(year=int(data["YEAR"].iloc[0]), month=1, day=1), "MS", monthly)


def _macrodata(data: pd.DataFrame) -> TimeSeries:
    start = pd.Timestamp(year=int(data["year"].iloc[0]), month=3 * int(data["quarter"].iloc[0]) - 2, day=1)
    return TimeSeries("realgdp", start, "QS", data["realgdp"].to_numpy())


BUNDLED_SERIES: dict[str, Callable[[pd.DataFrame], TimeSeries]] = {
    "co2": _co2,
    "sunspots": lambda data: _annual("sunspots", data["YEAR"], data["SUNACTIVITY"]),
    "elnino": _elnino,
    "nile": lambda data: _annual("nile", data["year"], data["volume"]),
    "macrodata": _macrodata,
}


def load_bundled_series(name: str) -> list[TimeSeries]:
    """A statsmodels data set as series: ``co2`` (weekly CO2 ppm, NaNs interpolated), ``sunspots``
    (yearly), ``elnino`` (monthly sea temperature), ``nile`` (yearly river flow) or ``macrodata``
    (quarterly US real GDP)."""
    if name not in BUNDLED_SERIES:
        raise ValueError(f"unknown bundled series {name!r}; available: {sorted(BUNDLED_SERIES)}")
    data = importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data
    return [BUNDLED_SERIES[name](data)]


class TimeSeriesWindowDataset(Dataset):
    """Windows of ``window_length`` consecutive values as ``{"values", "item_index", "start_index"}``.

    ``split="train"`` keeps windows clear of each series' last ``test_length`` points, ``"test"`` is
    the final window of each series (its last ``test_length`` points are the held-out ones) and
    ``"all"`` uses whole series. With ``num_windows_per_epoch=None`` the dataset enumerates every
    window; with a number it has that many windows, each drawn uniformly from all windows by a
    generator seeded with ``(seed, index)``, so an index always gives the same window.
    """

    def __init__(
        self,
        series: Sequence[TimeSeries],
        window_length: int,
        num_windows_per_epoch: int | None = None,
        split: str = "train",
        test_length: int = 0,
        seed: int = 0,
    ):
        _check_choice("split", split, SPLITS)
        if window_length < 1 or test_length < 0:
            raise ValueError(f"window_length must be >= 1 and test_length >= 0, got {window_length} and {test_length}")
        if split == "test" and test_length == 0:
            raise ValueError("split='test' needs test_length > 0 (the held-out points at the end of each series)")
        if num_windows_per_epoch is not None and num_windows_per_epoch < 1:
            raise ValueError(f"num_windows_per_epoch must be None or >= 1, got {num_windows_per_epoch}")
        if not series:
            raise ValueError("series is empty; expected at least one TimeSeries")
        self.series, self.window_length, self.split = list(series), window_length, split
        self.test_length, self.num_windows_per_epoch, self.seed = test_length, num_windows_per_epoch, seed
        self.start_ranges = [self._start_range(s) for s in self.series]
        counts = [last - first + 1 for first, last in self.start_ranges]
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def _start_range(self, series: TimeSeries) -> tuple[int, int]:
        """First and last allowed window start in ``series``."""
        held_out = self.test_length if self.split == "train" else 0
        last = len(series) - held_out - self.window_length
        if last < 0:
            raise ValueError(
                f"series {series.item_id!r} has {len(series)} points; split={self.split!r} needs at least "
                f"{self.window_length + held_out} (window_length={self.window_length}, held out={held_out})"
            )
        return (last if self.split == "test" else 0), last

    @property
    def num_windows(self) -> int:
        """Number of distinct windows in the split."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_windows if self.num_windows_per_epoch is None else self.num_windows_per_epoch

    def window(self, window_index: int) -> tuple[int, int]:
        """``(item_index, start_index)`` of the ``window_index``-th distinct window."""
        item = int(np.searchsorted(self.offsets, window_index, side="right")) - 1
        return item, self.start_ranges[item][0] + window_index - int(self.offsets[item])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        if self.num_windows_per_epoch is not None:
            index = int(np.random.default_rng([self.seed, index]).integers(self.num_windows))
        item, start = self.window(index)
        values = self.series[item].values[start : start + self.window_length]
        return {"values": torch.from_numpy(values.copy()), "item_index": item, "start_index": start}
