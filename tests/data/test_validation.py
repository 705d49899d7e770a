"""The shared input checks (selfgen.data.validation): each refuses silent garbage with a ValueError naming
the argument and the expected form."""

import numpy as np
import pytest
import torch
from PIL import Image

from selfgen.data.validation import check_positive_int, images_to_tensor, series_to_array, video_to_array


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_check_positive_int_refuses_zero_negatives_and_non_integers(value):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer >= 1"):
        check_positive_int(value, "num_inference_steps")


def test_check_positive_int_accepts_numpy_integers():
    assert check_positive_int(np.int64(3), "steps") == 3 and isinstance(check_positive_int(np.int64(3), "steps"), int)


def test_images_numpy_pil_and_torch_agree():
    array = np.random.default_rng(0).random((2, 4, 4, 3), dtype=np.float32)
    pils = [Image.fromarray((image * 255).round().astype(np.uint8)) for image in array]
    from_numpy = images_to_tensor(array, channels=3, size=4)
    torch.testing.assert_close(from_numpy, torch.from_numpy(array).permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(images_to_tensor(pils), from_numpy, atol=1 / 255, rtol=0)
    torch.testing.assert_close(images_to_tensor(from_numpy), from_numpy)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((1, 4, 4, 3), np.nan, np.float32), r"images contains 48 NaN or infinite values"),
        (torch.full((1, 3, 4, 4), float("inf")), r"images contains 48 NaN or infinite values"),
        (np.full((1, 4, 4, 3), 200.0, np.float32), r"values in \[0, 1\].*0-255 pixels\? divide by 255"),
        (np.full((1, 4, 4, 3), 200, np.uint8), r"as floats in \[0, 1\]; got a uint8 array"),
        (torch.full((1, 3, 4, 4), 2.0), r"torch \(N, C, H, W\) with values in \[-1, 1\]; got values in \[2, 2\]"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), r"must be a float tensor in \[-1, 1\], got torch.uint8"),
        (np.zeros((0, 4, 4, 3), np.float32), r"images is an empty batch"),
        (torch.zeros((0, 3, 4, 4)), r"images is an empty batch"),
        ([], r"non-empty list of PIL images"),
        (np.zeros((4, 4, 3), np.float32), r"numpy \(N, H, W, C\) in \[0, 1\], got shape \(4, 4, 3\)"),
        (np.zeros((1, 4, 4, 1), np.float32), r"\(C, H, W\) = \(3, 4, 4\).*got \(C, H, W\) = \(1, 4, 4\)"),
        ("image.png", r"must be a numpy array, a PIL image"),
    ],
)
def test_images_bad_values_are_errors(images, message):
    with pytest.raises(ValueError, match=message):
        images_to_tensor(images, "images", channels=3, size=4)


def test_video_checks_range_dtype_and_emptiness():
    frames = np.random.default_rng(0).random((3, 4, 4, 3))
    np.testing.assert_allclose(video_to_array(torch.from_numpy(frames)), frames.astype(np.float32))
    for bad, message in [
        (frames * 255, r"values in \[0, 1\].*divide by 255"),
        ((frames * 255).astype(np.uint8), "got a uint8 array"),
        (np.where(frames > 0.5, np.nan, frames), "NaN or infinite"),
        (np.zeros((0, 4, 4, 3)), "is empty"),
        (np.zeros((3, 4, 4)), r"\(T, H, W, 3\)"),
    ]:
        with pytest.raises(ValueError, match=rf"source_video .*{message}|source_video.*{message}"):
            video_to_array(bad, "source_video")


def test_series_keeps_nan_as_missing_and_refuses_infinity():
    values = series_to_array([1.0, np.nan, 3.0])
    assert values.shape == (1, 3) and np.isnan(values[0, 1])
    for bad, message in [
        ([1.0, np.inf], "context contains 1 infinite values"),
        ([[1.0, float("1e309")]], "context contains 1 infinite values"),
        (np.zeros((0, 5)), "non-empty"),
        ([], "non-empty"),
        (np.zeros((2, 2, 2)), r"\(batch, length\)"),
        (["a", "b"], "must be numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            series_to_array(bad, "context")
