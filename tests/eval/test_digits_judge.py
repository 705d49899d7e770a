from pathlib import Path

import numpy as np
import pytest
import torch

from selfgen.data.digits import load_digits_arrays
from selfgen.eval.digits import DigitsJudge, frechet_distance

ASSET = Path(__file__).resolve().parents[2] / "assets" / "ddpm-digits"


@pytest.fixture(scope="module")
def judge():
    return DigitsJudge(resolution=16)


def _as_judge_input(images: torch.Tensor) -> np.ndarray:
    return ((images.permute(0, 2, 3, 1) + 1) / 2).numpy()


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_shift():
    features = np.random.default_rng(0).normal(size=(500, 4))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(features, features + 1.0) == pytest.approx(4.0, rel=0.05)


def test_judge_prefers_real_digits_to_noise(judge):
    real, _ = load_digits_arrays("train", 16)
    real_scores = judge.evaluate(_as_judge_input(real[:300]))
    noise_scores = judge.evaluate(np.random.default_rng(0).random((300, 16, 16, 1)))
    assert real_scores["frechet_distance"] < 0.05 * noise_scores["frechet_distance"]
    assert real_scores["confidence"] > 0.9 and real_scores["class_coverage"] == 10


def test_judge_rejects_wrong_shapes(judge):
    with pytest.raises(ValueError, match="1-channel"):
        judge.evaluate(np.zeros((4, 16, 16, 3)))
    with pytest.raises(ValueError, match="fitted at 16x16"):
        judge.evaluate(np.zeros((4, 8, 8, 1)))


@pytest.mark.skipif(not ASSET.is_dir(), reason="bundled checkpoint not present")
def test_bundled_ddpm_digits_samples_beat_noise(judge):
    from selfgen import AutoPipeline
    from selfgen.pipelines.pipeline_utils import use_scheduler

    pipe = AutoPipeline.from_pretrained(ASSET)
    use_scheduler(pipe, "ddim")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=64, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np").images
    samples = judge.evaluate(images)
    noise = judge.evaluate(np.random.default_rng(0).random(images.shape))
    assert samples["frechet_distance"] < 0.25 * noise["frechet_distance"]
    assert samples["class_coverage"] >= 8
