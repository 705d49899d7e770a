from pathlib import Path

import numpy as np
import pytest
import torch

from selfgen import ZoomLDMPipeline
from selfgen.eval.zoom_mil import bag_features, denoiser_features, held_out_regions, mil_probe, shuffle_patches


ASSET = Path(__file__).resolve().parents[2] / "assets" / "zoomldm-retina"
pytestmark = pytest.mark.skipif(not ASSET.is_dir(), reason="bundled checkpoint not built")


@pytest.fixture(scope="module")
def pipe():
    return ZoomLDMPipeline.from_pretrained(ASSET)


def smooth_regions(count: int, size: int = 128) -> torch.Tensor:
    """Colour ramps rising towards the bottom-right (random slopes): the arrangement is what tells bags apart."""
    rng = np.random.default_rng(0)
    y, x = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    slopes = rng.uniform(0.5, 1, size=(count, 3, 2))
    images = 0.5 + 0.45 * (slopes[..., 0, None, None] * x + slopes[..., 1, None, None] * y) / 2
    return torch.from_numpy(images.astype(np.float32))


def test_shuffle_keeps_the_level0_multiset_and_single_scale_features():
    regions = smooth_regions(3)
    shuffled = shuffle_patches(regions, 32, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, regions)
    sort = lambda r: r.reshape(3, 3, 4, 32, 4, 32).permute(0, 2, 4, 1, 3, 5).reshape(3, 16, -1).sort(dim=1).values  # noqa: E731
    torch.testing.assert_close(sort(shuffled), sort(regions))


def test_multi_scale_features_beat_single_scale_on_the_arrangement_case(pipe):
    """Intact vs patch-shuffled regions: identical level-0 instances, so single-scale mean-pooled features are at
    chance by construction, while the coarser magnifications see the broken arrangement."""
    regions = smooth_regions(20)
    shuffled = shuffle_patches(regions, 32, torch.Generator().manual_seed(1))
    bags = (torch.cat([regions, shuffled]), np.repeat([0, 1], 20), np.tile(np.arange(20), 2))
    scores = mil_probe(pipe, bag_level=2, families=("pixels", "ssl"), folds=4, bags=bags)
    for family in ("pixels", "ssl"):
        assert scores[family]["single_scale"] == pytest.approx(0.5)
        assert scores[family]["multi_scale"] >= 0.8
    assert scores["chance"] == 0.5 and scores["num_bags"] == 40


def test_zoomldm_features_have_one_block_per_level(pipe):
    config = pipe.denoiser.config  # a ZoomLDMDenoiser (hidden_size) or a UNet2DConditionModel (mid-block width)
    width = config.hidden_size if "hidden_size" in config else config.block_out_channels[-1]
    features = bag_features(pipe, smooth_regions(2), [0, 1, 2], "zoomldm", timestep=50)
    assert features.shape == (2, 3 * width) and np.isfinite(features).all()
    assert not np.allclose(features[:, :width], features[:, width : 2 * width])  # magnifications see different inputs
    with pytest.raises(ValueError, match="family must be one of"):
        bag_features(pipe, smooth_regions(2), [0], "raw")


def test_regions_come_from_the_held_out_columns_only():
    image = torch.arange(200, dtype=torch.float32).expand(3, 120, 200)  # pixel value = its column
    regions, tops = held_out_regions(image, 32, 16)
    assert regions.min() >= 150 and len(regions) == len(tops) > 0
    with pytest.raises(ValueError, match="held-out columns"):
        held_out_regions(image, 64, 16)


def test_unet_features_are_its_pooled_mid_block_and_see_the_context():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=8,
    ).eval()
    latents, contexts = torch.randn(2, 4, 8, 8), torch.randn(2, 2, 3, 8)
    with torch.no_grad():
        first, second = (denoiser_features(unet, latents, 50, context) for context in contexts)
    assert first.shape == (2, 32) and torch.isfinite(first).all()
    assert (first - second).abs().max() > 1e-3  # the conditioning reaches the features
