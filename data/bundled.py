"""Bundled real series (they ship with statsmodels) with fixed train/test splits and standard horizons.

=========  =========================  =========  ====================  ===========
name       series                     frequency  horizon x test windows  season
=========  =========================  =========  ====================  ===========
co2        Mauna Loa CO2 (ppm)        weekly     26 x 8                52
sunspots   yearly sunspot activity    yearly     11 x 5                11
elnino     sea temperature (C)        monthly    12 x 6                12
realgdp    log US real GDP            quarterly  8 x 5                 4
=========  =========================  =========  ====================  ===========

The last ``horizon * num_test_windows`` points of each series are the test split: training (and any
statistic computed for it) sees only :attr:`BundledSeries.train_values`. The test split is evaluated
as rolling windows: window ``k`` forecasts ``horizon`` points from all values before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .timeseries import TimeSeries, load_bundled_series


@dataclass(frozen=True)
class BundledSpec:
    statsmodels_name: str
    prediction_length: int
    num_test_windows: int
    season_length: int
    transform: Callable[[np.ndarray], np.ndarray] | None = None


BUNDLED_SPECS: dict[str, BundledSpec] = {
    "co2": BundledSpec("co2", 26, 8, 52),
    "sunspots": BundledSpec("sunspots", 11, 5, 11),
    "elnino": BundledSpec("elnino", 12, 6, 12),
    "realgdp": BundledSpec("macrodata", 8, 5, 4, transform=np.log),
}


@dataclass
class BundledSeries:
    """One bundled series with its split. ``values`` is the whole (transformed) series."""

    name: str
    series: TimeSeries
    prediction_length: int
    num_test_windows: int
    season_length: int

    @property
    def values(self) -> np.ndarray:
        return self.series.values

    @property
    def test_length(self) -> int:
        return self.prediction_length * self.num_test_windows

    @property
    def train_values(self) -> np.ndarray:
        """Everything before the test split."""
        return self.values[: len(self.values) - self.test_length]

    @property
    def train_series(self) -> TimeSeries:
        return TimeSeries(self.series.item_id, self.series.start, self.series.freq, self.train_values)

    def test_windows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The rolling test windows as ``(history, truth)``: ``truth`` is the next ``prediction_length``
        points after ``history`` (all values before them)."""
        first = len(self.values) - self.test_length
        return [
            (self.values[:start], self.values[start : start + self.prediction_length])
            for start in range(first, len(self.values), self.prediction_length)
        ]


def load_bundled(name: str) -> BundledSeries:
    """The bundled series ``name`` (one of :data:`BUNDLED_SPECS`) with its split and horizon."""
    if name not in BUNDLED_SPECS:
        raise ValueError(f"unknown bundled series {name!r}; expected one of {sorted(BUNDLED_SPECS)}")
    spec = BUNDLED_SPECS[name]
    (series,) = load_bundled_series(spec.statsmodels_name)
    values = spec.transform(series.values) if spec.transform else series.values
    series = TimeSeries(name, series.start, series.freq, values)
    return BundledSeries(name, series, spec.prediction_length, spec.num_test_windows, spec.season_length)
