import numpy as np
import pytest

from selfgen.eval.zoom import area_downsample, consistency_psnr, high_frequency_energy, psnr, seam_score


def smooth_image(size=64):
    y, x = np.mgrid[0:size, 0:size] / size
    return np.stack([np.sin(3 * x + 2 * y), np.cos(4 * y), x * y], -1) * 0.4 + 0.5


def test_seam_score_is_one_for_seamless_and_large_for_tiled():
    image = smooth_image()
    assert seam_score(image, 16) == pytest.approx(1.0, abs=0.1)
    tiled = image.copy()
    rng = np.random.default_rng(0)
    for top in range(0, 64, 16):
        for left in range(0, 64, 16):
            tiled[top : top + 16, left : left + 16] += rng.uniform(-0.2, 0.2)
    assert seam_score(tiled, 16) > 3
    with pytest.raises(ValueError, match="tile"):
        seam_score(image, 24)


def test_psnr_and_consistency():
    image = smooth_image()
    assert psnr(image, image) > 100
    assert psnr(image, image + 0.1) == pytest.approx(20.0, abs=1e-6)
    low = area_downsample(image, 4)[0]
    assert low.shape == (16, 16, 3)
    assert consistency_psnr(image, low) > 100
    assert consistency_psnr(image + 0.1, low) == pytest.approx(20.0, abs=1e-6)


def test_high_frequency_energy_drops_with_blur():
    noisy = np.random.default_rng(0).uniform(size=(32, 32, 3))
    blurred = np.repeat(np.repeat(area_downsample(noisy, 4)[0], 4, 0), 4, 1)
    assert high_frequency_energy(blurred) < 0.5 * high_frequency_energy(noisy)


def test_random_cnn_features_are_fixed_and_separate_distributions():
    from selfgen.eval.zoom import frechet_distance, random_cnn_features

    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.random((96, 8, 8, 3)), 4, axis=1), 4, axis=2)
    noisy = rng.random((96, 32, 32, 3))
    features = random_cnn_features(smooth[:48])
    assert features.shape == (48, 64)
    np.testing.assert_allclose(random_cnn_features(smooth[:48]), features, rtol=1e-5, atol=1e-6)  # the same fixed network every call
    same = frechet_distance(random_cnn_features(smooth[48:]), features)
    assert frechet_distance(random_cnn_features(noisy[:48]), features) > 2 * same  # 48 samples: a biased floor
