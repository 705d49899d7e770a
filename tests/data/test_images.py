"""ImageFolderDataset: the imagefolder convention, transforms, metadata and up-front validation."""

import io
import json
import logging
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from selfgen.data.common import validate_on_error
from selfgen.data.images import ImageFolderDataset


def save_image(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def solid(height, width, color):
    return np.broadcast_to(np.uint8(color), (height, width, 3))


def write_metadata(root, rows, name="metadata.jsonl"):
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


@pytest.fixture
def folder(tmp_path):
    """Two solid images in nested folders (one non-square) plus captions and labels."""
    save_image(tmp_path / "red" / "a.png", solid(12, 16, (255, 0, 0)))
    save_image(tmp_path / "blue" / "b.bmp", solid(8, 8, (0, 0, 255)))
    write_metadata(
        tmp_path,
        [
            {"file_name": "red/a.png", "caption": "a red square", "label": 3},
            {"file_name": "blue/b.bmp", "caption": "a blue square", "label": 7, "ignored": [1]},
        ],
    )
    return tmp_path


def test_good_folder_gives_normalized_tensors_with_metadata(folder):
    dataset = ImageFolderDataset(folder, resolution=8)
    assert len(dataset) == 2 and dataset.num_skipped == 0 and dataset.skipped == []
    blue, red = dataset[0], dataset[1]  # files are sorted by path
    for item in (blue, red):
        assert item["pixel_values"].shape == (3, 8, 8) and item["pixel_values"].dtype == torch.float32
        assert set(item) == {"pixel_values", "caption", "label"}
    torch.testing.assert_close(red["pixel_values"], torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 8, 8))
    torch.testing.assert_close(blue["pixel_values"], torch.tensor([-1.0, -1.0, 1.0])[:, None, None].expand(3, 8, 8))
    assert (red["caption"], red["label"].item(), red["label"].dtype) == ("a red square", 3, torch.int64)
    assert (blue["caption"], blue["label"].item()) == ("a blue square", 7)


def test_pixels_round_trip_and_grayscale(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    save_image(tmp_path / "x.png", pixels)
    item = ImageFolderDataset(tmp_path, resolution=8)[0]
    assert set(item) == {"pixel_values"}  # no metadata file, no caption/label keys
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(item["pixel_values"], expected)
    gray = ImageFolderDataset(tmp_path, resolution=8, channels=1)[0]["pixel_values"]
    assert gray.shape == (1, 8, 8) and gray.min() >= -1 and gray.max() <= 1


def test_center_crop_and_random_flip(tmp_path):
    halves = np.zeros((8, 16, 3), np.uint8)
    halves[:, 8:] = 255  # left half black, right half white
    save_image(tmp_path / "halves.png", halves)
    center = ImageFolderDataset(tmp_path, resolution=8)[0]["pixel_values"]
    assert (center[:, :, :4] == -1).all() and (center[:, :, 4:] == 1).all()
    torch.manual_seed(0)
    flipping = ImageFolderDataset(tmp_path, resolution=8, random_flip=True)
    draws = [flipping[0]["pixel_values"] for _ in range(12)]
    assert all(torch.equal(d, center) or torch.equal(d, center.flip(-1)) for d in draws)
    assert any(torch.equal(d, center.flip(-1)) for d in draws) and any(torch.equal(d, center) for d in draws)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"image folder {tmp_path / 'nope'} not found")):
        ImageFolderDataset(tmp_path / "nope", resolution=8)


def test_folder_without_images_names_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=rf"no image files under {re.escape(str(tmp_path))}; expected .*\.png.*\.webp"):
        ImageFolderDataset(tmp_path, resolution=8)


def test_corrupt_image_raises_naming_the_file(tmp_path):
    save_image(tmp_path / "good.png", solid(8, 8, (0, 255, 0)))
    (tmp_path / "bad.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match=rf"corrupt or unreadable image {re.escape(str(tmp_path / 'bad.png'))}"):
        ImageFolderDataset(tmp_path, resolution=8)


def test_truncated_image_is_skipped_and_counted(tmp_path, caplog):
    save_image(tmp_path / "good.png", solid(8, 8, (0, 255, 0)))
    data = save_image(tmp_path / "cut.png", solid(8, 8, (9, 9, 9))).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 garbage")
    with caplog.at_level(logging.WARNING, logger="selfgen.data"):
        dataset = ImageFolderDataset(tmp_path, resolution=8, on_error="skip")
    assert len(dataset) == 1 and dataset.num_skipped == 2
    assert [path for path, _ in dataset.skipped] == [str(tmp_path / "cut.png"), str(tmp_path / "junk.jpg")]
    assert "skipping" in caplog.text and "junk.jpg" in caplog.text


def jpeg_bytes(seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def png_with_corrupt_data():
    """A PNG whose IDAT chunk holds garbage with a correct CRC: ``verify()`` accepts it, decoding fails."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    data[start + 12 : start + 4 + length] = bytes((7 * i) % 256 for i in range(length - 8))  # keep the zlib header
    body = bytes(data[start : start + 4 + length])
    data[start + 4 + length : start + 8 + length] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


def test_truncated_jpeg_and_corrupt_png_data_are_caught_when_the_dataset_is_built(tmp_path):
    save_image(tmp_path / "good.png", solid(8, 8, (0, 255, 0)))
    jpeg = jpeg_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "bad_data.png").write_bytes(png_with_corrupt_data())
    with pytest.raises(ValueError, match=rf"corrupt or unreadable image {re.escape(str(tmp_path / 'bad_data.png'))}"):
        ImageFolderDataset(tmp_path, resolution=8)
    dataset = ImageFolderDataset(tmp_path, resolution=8, on_error="skip")
    assert dataset.num_skipped == 2 and [path.name for path in dataset.files] == ["good.png"]
    assert dataset[0]["pixel_values"].shape == (3, 8, 8)  # every kept item decodes


def test_all_images_corrupt_with_skip(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="none of the 1 image files"):
        ImageFolderDataset(tmp_path, resolution=8, on_error="skip")


@pytest.mark.parametrize(
    "rows, message",
    [
        (['{"file_name": "red/a.png"', {"file_name": "blue/b.bmp"}], r"metadata.jsonl:1: invalid JSON"),
        (
            [{"file_name": "red/a.png"}, {"caption": "no file"}],
            r"metadata.jsonl:2: expected a non-empty string 'file_name'",
        ),
        ([{"file_name": "red/missing.png"}], r"metadata.jsonl:1: file_name 'red/missing.png' not found"),
        (
            [{"file_name": "red/a.png", "label": "3"}, {"file_name": "blue/b.bmp", "label": 1}],
            r"metadata.jsonl:1: field 'label': expected an integer, got str '3'",
        ),
        (
            [{"file_name": "red/a.png", "caption": 5}, {"file_name": "blue/b.bmp", "caption": "x"}],
            r"metadata.jsonl:1: field 'caption': expected a string, got int 5",
        ),
        (
            [{"file_name": "red/a.png", "caption": "x"}, {"file_name": "blue/b.bmp"}],
            r"metadata.jsonl:2: has fields \[\] but line 1 has \['caption'\]",
        ),
        ([{"file_name": "red/a.png"}], r"metadata.jsonl: no line for 1 file\(s\) .*blue/b.bmp"),
        ([{"file_name": "red/a.png"}, {"file_name": "red/a.png"}], r"metadata.jsonl:2: duplicate file_name"),
    ],
)
def test_bad_metadata_names_file_line_and_expectation(folder, rows, message):
    write_metadata(folder, rows)
    with pytest.raises(ValueError, match=message):
        ImageFolderDataset(folder, resolution=8)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"on_error must be one of \('raise', 'skip'\), got 'ignore'"):
        validate_on_error("ignore")
    with pytest.raises(ValueError, match="channels must be 1"):
        ImageFolderDataset(".", resolution=8, channels=4)
