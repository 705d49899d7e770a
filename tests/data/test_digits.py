"""DigitsDataset / load_digits_arrays: shapes, range and the fixed, disjoint split."""

from collections import Counter

import pytest
import torch

from selfgen.data.digits import DigitsDataset, load_digits_arrays


def rows(images):
    return Counter(image.numpy().tobytes() for image in images)


def test_shapes_range_and_split_sizes():
    train, test = DigitsDataset("train"), DigitsDataset("test")
    assert (len(train), len(test)) == (1437, 360)
    item = train[0]
    assert item["pixel_values"].shape == (1, 16, 16) and item["pixel_values"].dtype == torch.float32
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert train.images.min() == -1 and train.images.max() > 0.9
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))


def test_split_is_a_deterministic_partition():
    train_images, train_labels = load_digits_arrays("train")
    test_images, _ = load_digits_arrays("test")
    all_images, _ = load_digits_arrays("all")
    assert rows(train_images) + rows(test_images) == rows(all_images)  # disjoint and complete
    again_images, again_labels = load_digits_arrays("train")
    assert torch.equal(train_images, again_images) and torch.equal(train_labels, again_labels)
    assert load_digits_arrays("train", resolution=8)[0].shape == (1437, 1, 8, 8)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\), got 'val'"):
        load_digits_arrays("val")
    with pytest.raises(ValueError, match="resolution must be >= 8"):
        DigitsDataset(resolution=4)
