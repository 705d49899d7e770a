"""VideoFolderDataset: decord/PyAV decoding, clips, trajectories and up-front validation."""

import json
import re

import av
import numpy as np
import pytest
import torch

from selfgen.data import video as video_module
from selfgen.data.video import VideoFolderDataset

NUM_FRAMES, SIZE = 12, 32


def ramp_frames(num_frames=NUM_FRAMES, height=SIZE, width=SIZE):
    """Frame ``t`` has red ``20 * t``, green 200 on its left half and blue 0."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = (20 * np.arange(num_frames))[:, None, None]
    frames[:, :, : width // 2, 1] = 200
    return frames


def write_video(path, frames, lossless=False):
    """mp4/mpeg4 (lossy) or mkv/ffv1 (lossless, no frame count in the header)."""
    codec, pix_fmt = ("ffv1", "bgr0") if lossless else ("mpeg4", "yuv420p")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def line_trajectories(num_frames=NUM_FRAMES):
    """Two entities: ``(t, 2t)`` and a fixed point ``(16, 4)``, one point per frame."""
    moving = [[t, 2 * t] for t in range(num_frames)]
    return [moving, [[16, 4]] * num_frames]


def write_metadata(root, rows):
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def folder(tmp_path):
    write_video(tmp_path / "clips" / "a.mkv", ramp_frames(), lossless=True)
    write_video(tmp_path / "b.mp4", ramp_frames())
    write_metadata(
        tmp_path,
        [
            {"file_name": "clips/a.mkv", "caption": "lossless ramp", "trajectories": line_trajectories()},
            {"file_name": "b.mp4", "caption": "mpeg4 ramp", "trajectories": line_trajectories()},
        ],
    )
    return tmp_path


def expected_red(indices):
    return torch.tensor([20.0 * t / 127.5 - 1 for t in indices])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_clips_values_captions_and_trajectories(folder, backend):
    dataset = VideoFolderDataset(folder, num_frames=4, frame_stride=3, resolution=16, backend=backend)
    assert len(dataset) == 2 and dataset.num_skipped == 0
    assert [v.num_frames for v in dataset.videos] == [NUM_FRAMES, NUM_FRAMES]
    lossy, lossless = dataset[0], dataset[1]  # b.mp4 sorts before clips/a.mkv
    assert lossless["caption"] == "lossless ramp" and lossy["caption"] == "mpeg4 ramp"
    pixels = lossless["pixel_values"]
    assert pixels.shape == (4, 3, 16, 16) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    torch.testing.assert_close(pixels[:, 0, 8, 8], expected_red([0, 3, 6, 9]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[:, 1, 8, 2], torch.full((4,), 200 / 127.5 - 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(lossy["pixel_values"][:, 0, 8, 8], expected_red([0, 3, 6, 9]), atol=0.08, rtol=0)
    trajectories = lossless["trajectories"]  # source 32x32 -> 16x16: coordinates halve
    assert trajectories.shape == (2, 4, 2) and trajectories.dtype == torch.float32
    torch.testing.assert_close(trajectories[0], torch.tensor([[0.0, 0], [1.5, 3], [3, 6], [4.5, 9]]))
    torch.testing.assert_close(trajectories[1], torch.tensor([[8.0, 2]] * 4))


def test_decord_and_pyav_agree(folder):
    decord_set = VideoFolderDataset(folder, num_frames=12, resolution=SIZE, backend="decord")
    pyav_set = VideoFolderDataset(folder, num_frames=12, resolution=SIZE, backend="pyav")
    assert [v.num_frames for v in decord_set.videos] == [v.num_frames for v in pyav_set.videos] == [12, 12]
    for index in range(2):
        torch.testing.assert_close(
            decord_set[index]["pixel_values"], pyav_set[index]["pixel_values"], atol=0.02, rtol=0
        )


def test_rectangular_resolution_crops_and_shifts_trajectories(folder):
    dataset = VideoFolderDataset(folder, num_frames=2, resolution=(16, 32), backend="pyav")
    item = dataset[1]
    assert item["pixel_values"].shape == (2, 3, 16, 32)
    torch.testing.assert_close(item["trajectories"][0], torch.tensor([[0.0, -8], [1, -6]]))  # y - top crop of 8


def test_auto_falls_back_to_pyav_when_decord_fails(folder, monkeypatch):
    def broken(path):
        raise RuntimeError("decord says no")

    monkeypatch.setattr(video_module, "_decord_probe", broken)
    dataset = VideoFolderDataset(folder, num_frames=2, resolution=16)
    assert [v.backend.name for v in dataset.videos] == ["pyav", "pyav"]
    assert dataset[1]["pixel_values"].shape == (2, 3, 16, 16)


def test_random_clip_start_stays_inside_the_video(folder):
    torch.manual_seed(0)
    dataset = VideoFolderDataset(
        folder, num_frames=3, frame_stride=2, resolution=16, clip_start="random", backend="pyav"
    )
    starts = {dataset.frame_indices(dataset.videos[0])[0] for _ in range(40)}
    assert starts <= set(range(0, NUM_FRAMES - 5 + 1)) and len(starts) > 1


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"video folder {tmp_path / 'nope'} not found")):
        VideoFolderDataset(tmp_path / "nope", num_frames=2)


def test_folder_without_videos(tmp_path):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"no video files under .*expected files with extensions \.mp4, \.avi"):
        VideoFolderDataset(tmp_path, num_frames=2)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_corrupt_video_raises_naming_the_file(tmp_path, backend):
    write_video(tmp_path / "good.mp4", ramp_frames())
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 then garbage" * 10)
    with pytest.raises(ValueError, match=rf"undecodable video {re.escape(str(tmp_path / 'bad.mp4'))} \(.*pyav: "):
        VideoFolderDataset(tmp_path, num_frames=2, backend=backend)


def test_corrupt_and_short_videos_are_skipped_and_counted(tmp_path):
    write_video(tmp_path / "good.mp4", ramp_frames())
    write_video(tmp_path / "short.mp4", ramp_frames(num_frames=6))
    (tmp_path / "bad.avi").write_bytes(b"RIFF garbage")
    dataset = VideoFolderDataset(tmp_path, num_frames=4, frame_stride=2, resolution=16, on_error="skip")
    assert len(dataset) == 1 and dataset.num_skipped == 2
    reasons = dict(dataset.skipped)
    assert "undecodable video" in reasons[str(tmp_path / "bad.avi")]
    assert "has 6 frames" in reasons[str(tmp_path / "short.mp4")]


def truncated_fast_start_mp4(path, num_frames=24):
    """An mp4 with its index (moov) first, cut after a third of its bytes: the header promises every frame,
    so opening it and decoding frame 0 succeed, and reading a later frame fails."""
    frames = np.random.default_rng(0).integers(0, 256, (num_frames, SIZE, SIZE, 3), dtype=np.uint8)
    whole = path.with_name("whole.tmp")
    with av.open(str(whole), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.height, stream.width, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_fast_start_mp4_is_caught_when_the_dataset_is_built(tmp_path, backend):
    write_video(tmp_path / "good.mp4", ramp_frames())
    truncated_fast_start_mp4(tmp_path / "cut.mp4")
    with pytest.raises(ValueError, match=rf"undecodable video {re.escape(str(tmp_path / 'cut.mp4'))}"):
        VideoFolderDataset(tmp_path, num_frames=8, frame_stride=1, resolution=16, backend=backend)
    dataset = VideoFolderDataset(tmp_path, num_frames=8, resolution=16, backend=backend, on_error="skip")
    assert dataset.num_skipped == 1 and [video.path.name for video in dataset.videos] == ["good.mp4"]
    assert dataset[0]["pixel_values"].shape == (8, 3, 16, 16)


def test_short_video_names_both_lengths(tmp_path):
    write_video(tmp_path / "short.mp4", ramp_frames())
    path = re.escape(str(tmp_path / "short.mp4"))
    message = rf"video {path} has 12 frames but num_frames=5 with frame_stride=3 needs at least 13"
    with pytest.raises(ValueError, match=message):
        VideoFolderDataset(tmp_path, num_frames=5, frame_stride=3)


@pytest.mark.parametrize(
    "trajectories, message",
    [
        (
            line_trajectories(10),
            r"metadata.jsonl:1: trajectories of .*a.mkv have 10 points per entity but the video has 12 frames",
        ),
        ([[1, 2], [3, 4]], r"metadata.jsonl:1: field 'trajectories': expected a non-empty list of entities"),
        ([[[0, 0]] * 12, [[0, 0]] * 11], r"metadata.jsonl:1: field 'trajectories': expected a non-empty list"),
        ("up and right", r"metadata.jsonl:1: field 'trajectories': expected"),
    ],
)
def test_bad_trajectories_name_file_and_line(tmp_path, trajectories, message):
    write_video(tmp_path / "a.mkv", ramp_frames(), lossless=True)
    write_metadata(tmp_path, [{"file_name": "a.mkv", "trajectories": trajectories}])
    with pytest.raises(ValueError, match=message):
        VideoFolderDataset(tmp_path, num_frames=2)


def test_bad_arguments(folder):
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'decord', 'pyav'\)"):
        VideoFolderDataset(folder, num_frames=2, backend="opencv")
    with pytest.raises(ValueError, match="clip_start must be one of"):
        VideoFolderDataset(folder, num_frames=2, clip_start="middle")
    with pytest.raises(ValueError, match="on_error must be one of"):
        VideoFolderDataset(folder, num_frames=2, on_error="warn")
