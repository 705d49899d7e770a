"""Fuzzing the four user-data loaders: whatever the bytes, only the documented exceptions escape
(``ValueError`` for bad contents, ``FileNotFoundError`` for a missing file), and whatever a loader
accepts can be read item by item."""

import io
import json
import tempfile
from pathlib import Path

import av
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from selfgen.data.images import ImageFolderDataset
from selfgen.data.problems import load_problems
from selfgen.data.timeseries import load_time_series
from selfgen.data.video import VideoFolderDataset

DOCUMENTED = (ValueError, FileNotFoundError)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _mp4_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.mp4"
        with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.height = stream.width = 16
            stream.pix_fmt = "yuv420p"
            for value in range(6):
                frame = np.full((16, 16, 3), 40 * value, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        return path.read_bytes()


PNG, JPEG, MP4 = _png_bytes(), _jpeg_bytes(), _mp4_bytes()


def damaged(original: bytes):
    """A valid file cut short, with some bytes overwritten, or plain random bytes."""
    cut = st.integers(0, len(original)).map(lambda end: original[:end])
    flipped = st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: bytes(_apply(original, edits))
    )
    return st.one_of(cut, flipped, st.binary(max_size=200))


def _apply(data: bytes, edits) -> bytearray:
    data = bytearray(data)
    for index, value in edits:
        data[index] = value
    return data


@FUZZ
@given(data=damaged(PNG), jpeg=damaged(JPEG), on_error=st.sampled_from(["raise", "skip"]))
def test_image_folder_raises_only_documented_errors(data, jpeg, on_error):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "a.png").write_bytes(data)
        (Path(folder) / "b.jpg").write_bytes(jpeg)
        try:
            dataset = ImageFolderDataset(folder, resolution=8, on_error=on_error)
        except DOCUMENTED:
            return
        for index in range(len(dataset)):  # everything accepted decodes
            assert dataset[index]["pixel_values"].shape == (3, 8, 8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(MP4), on_error=st.sampled_from(["raise", "skip"]))
def test_video_folder_raises_only_documented_errors(data, on_error):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "clip.mp4").write_bytes(data)
        try:
            dataset = VideoFolderDataset(folder, num_frames=4, resolution=8, backend="pyav", on_error=on_error)
        except DOCUMENTED:
            return
        for index in range(len(dataset)):
            assert dataset[index]["pixel_values"].shape == (4, 3, 8, 8)


CELLS = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1e309", "abc", "2020-01-01", "2020-13-45", "0", "-1.5", '"x,y"']),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.dates().map(str),
)


@FUZZ
@given(
    header=st.sampled_from(["item_id,timestamp,target", "timestamp,a,b", "item_id,timestamp,value", "timestamp", "a,b,c"]),
    rows=st.lists(st.lists(CELLS, min_size=1, max_size=4), max_size=12),
    freq=st.sampled_from([None, "D", "MS", "h"]),
    fill_na=st.sampled_from(["interpolate", "ffill", "zero", "raise"]),
)
def test_load_time_series_raises_only_documented_errors(header, rows, freq, fill_na):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "series.csv"
        path.write_text(header + "\n" + "".join(",".join(row) + "\n" for row in rows))
        try:
            series = load_time_series(path, freq=freq, fill_na=fill_na)
        except DOCUMENTED:
            return
        for item in series:  # accepted series are finite and on a grid
            assert np.isfinite(item.values).all() and len(item.index) == len(item)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
LINES = st.one_of(
    st.text(max_size=40),
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries(
        {"question": JSON_VALUES, "answer": JSON_VALUES}, optional={"id": JSON_VALUES, "extra": JSON_VALUES}
    ).map(json.dumps),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINES, max_size=6), raw=st.binary(max_size=30))
def test_load_problems_raises_only_documented_errors(lines, raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "problems.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw)
        try:
            problems = load_problems(path)
        except DOCUMENTED:
            return
        assert problems and all(problem.question.strip() and problem.answer.strip() for problem in problems)
        assert len({problem.id for problem in problems}) == len(problems)
