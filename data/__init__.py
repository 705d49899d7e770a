"""Where examples come from: the user's files (images, videos, time series, problems) and bundled data."""

from .common import SkipLog, validate_on_error
from .digits import DigitsDataset, load_digits_arrays
from .images import ImageFolderDataset
from .problems import Problem, ProblemDataset, load_problems, write_problems
from .timeseries import TimeSeries, TimeSeriesWindowDataset, load_bundled_series, load_time_series
from .video import VideoFolderDataset

__all__ = [
    "DigitsDataset",
    "ImageFolderDataset",
    "Problem",
    "ProblemDataset",
    "SkipLog",
    "TimeSeries",
    "TimeSeriesWindowDataset",
    "VideoFolderDataset",
    "load_bundled_series",
    "load_digits_arrays",
    "load_problems",
    "load_time_series",
    "validate_on_error",
    "write_problems",
]
