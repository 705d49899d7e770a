import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfgen.data.zoom import UniformMagnificationDataset, ZoomPatchDataset, min_image_side, pool_embedding_grid, split_bounds


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (160, 176)), ("b.tif", (136, 150))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / name)
    return tmp_path


def make(folder, split="train", **kwargs):
    return ZoomPatchDataset(folder, split, patch_size=8, num_levels=3, max_grid=2, **kwargs)


def test_held_out_columns_never_overlap_training_patches(image_folder):
    for split in ("train", "test"):
        dataset = make(image_folder, split)
        assert set(dataset.level_counts()) == {0, 1, 2} and all(dataset.level_counts().values())
        for entry in dataset.index:
            width = dataset.images[entry.image][1].shape[-1]
            start, stop = split_bounds(width, split)
            extent = 8 * 2**entry.level
            assert start <= entry.left and entry.left + extent <= stop
    assert split_bounds(176, "train") == (0, 132)  # right-most 25% of columns held out


def test_patch_is_area_downsampled_region(image_folder):
    dataset = make(image_folder)
    entry = next(e for e in dataset.index if e.level == 2 and e.left > 0)
    item = dataset[dataset.index.index(entry)]
    region = dataset.images[entry.image][1][:, entry.top : entry.top + 32, entry.left : entry.left + 32]
    torch.testing.assert_close(item["pixel_values"], F.avg_pool2d(region, 4) * 2 - 1)
    assert item["magnification"].item() == 2 and item["pixel_values"].shape == (3, 8, 8)


def test_conditioning_pools_the_level0_subgrid(image_folder):
    dataset = make(image_folder)
    grids = [torch.randn(img.shape[-2] // 8, img.shape[-1] // 8, 5) for _, img in dataset.images]
    dataset.attach_embeddings(grids)
    entry = next(e for e in dataset.index if e.level == 2)
    item = dataset[dataset.index.index(entry)]
    assert item["ssl_tokens"].shape == (4, 5) and item["ssl_mask"].tolist() == [True] * 4
    row, col = entry.top // 8, entry.left // 8
    sub = grids[entry.image][row : row + 4, col : col + 4]
    torch.testing.assert_close(item["ssl_tokens"][0], sub[:2, :2].mean((0, 1)))
    level0 = dataset[next(i for i, e in enumerate(dataset.index) if e.level == 0)]
    assert level0["ssl_mask"].tolist() == [True, False, False, False]
    assert torch.equal(level0["ssl_tokens"][1:], torch.zeros(3, 5))


def test_pool_embedding_grid_single_cell():
    tokens, mask = pool_embedding_grid(torch.ones(1, 1, 3), max_grid=4)
    assert tokens.shape == (16, 3) and mask.sum() == 1


def test_too_small_image_is_a_clear_error(tmp_path):
    Image.fromarray(np.zeros((64, 300, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=f"small.png.*>= {min_image_side(8, 3)}"):
        make(tmp_path)


def test_corrupt_file_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        make(tmp_path)


def test_missing_folder_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="bundled image"):
        make(["lena"])
    with pytest.raises(ValueError, match="levels"):
        make(["immunohistochemistry"], levels=[5])
    with pytest.raises(ValueError, match="split"):
        make(["immunohistochemistry"], split="val")


def test_bundled_image_loads():
    dataset = ZoomPatchDataset(["immunohistochemistry"], "test", patch_size=32, num_levels=3)
    assert dataset.level_counts()[2] >= 1 and dataset[0]["pixel_values"].shape == (3, 32, 32)


def test_uniform_magnification_sampling(image_folder):
    """Levels are drawn uniformly (the official loader), not in proportion to their patch counts."""
    dataset = ZoomPatchDataset(image_folder, "train", patch_size=8, num_levels=3)
    counts = dataset.level_counts()
    assert counts[0] > 3 * counts[2]  # shuffling patches would give level 2 far less than a third
    uniform = UniformMagnificationDataset(dataset, seed=0)
    draws = np.array([int(uniform[i]["magnification"]) for i in range(3000)])
    frequencies = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(frequencies, 1 / 3, atol=0.03)
    assert len(uniform) == len(dataset)
