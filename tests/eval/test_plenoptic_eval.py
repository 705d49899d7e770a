import numpy as np
import pytest

from selfgen.eval.multiview import MAX_PSNR, camera_error, chain_slope, error_share, masked_psnr, psnr, ssim


def test_psnr_values_and_mask():
    target = np.full((2, 4, 4, 3), 0.5)
    assert psnr(target, target) == MAX_PSNR
    np.testing.assert_allclose(psnr(target + 0.1, target), 20.0, atol=1e-9)
    prediction = target.copy()
    prediction[:, :2] += 0.1  # top half off by 0.1, bottom half exact
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[:, :2] = True
    np.testing.assert_allclose(masked_psnr(prediction, target, mask), 20.0, atol=1e-9)
    assert masked_psnr(prediction, target, ~mask) == MAX_PSNR
    assert np.isnan(masked_psnr(prediction, target, np.zeros_like(mask)))
    with pytest.raises(ValueError, match="same shape"):
        psnr(target, target[0])


def test_error_share_splits_the_squared_error_by_mask():
    target = np.zeros((2, 4, 4, 3))
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[:, :1] = True  # a quarter of the pixels
    prediction = target.copy()
    prediction[:, :1] += 0.2  # error only on the mask
    np.testing.assert_allclose(error_share(prediction, target, mask), 1.0, rtol=1e-12)
    prediction[:, 1:] += 0.2  # the same error everywhere: the share is the mask's pixel share
    np.testing.assert_allclose(error_share(prediction, target, mask), 0.25, rtol=1e-9)
    np.testing.assert_allclose(error_share(prediction, target, ~mask), 0.75, rtol=1e-9)
    assert np.isnan(error_share(target, target, mask))
    with pytest.raises(ValueError, match="mask must have shape"):
        error_share(prediction, target, mask[0])


def test_ssim_is_one_for_identical_videos_and_drops_with_noise():
    rng = np.random.default_rng(0)
    video = rng.random((2, 16, 16, 3))
    assert ssim(video, video) == pytest.approx(1.0)
    noisy = np.clip(video + rng.normal(0, 0.2, video.shape), 0, 1)
    assert ssim(noisy, video) < 0.9


def test_camera_error_picks_the_closest_candidate():
    renders = [np.full((1, 2, 2, 3), value) for value in (0.1, 0.5, 0.9)]
    assert camera_error(np.full((1, 2, 2, 3), 0.52), renders, [-10.0, 0.0, 10.0]) == 0.0
    assert camera_error(np.full((1, 2, 2, 3), 0.12), renders, [-10.0, 0.0, 10.0]) == 10.0
    with pytest.raises(ValueError, match="equal length"):
        camera_error(renders[0], renders, [0.0])


def test_chain_slope_is_the_least_squares_slope():
    assert chain_slope([3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert chain_slope([1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert np.isnan(chain_slope([1.0]))
    with pytest.raises(ValueError, match="one-dimensional"):
        chain_slope(np.zeros((2, 2)))
