"""An independent judge of generated 16x16 digits (it shares no weights with any generator).

Fitted on the real ``load_digits`` train split only:

* a PCA feature space (``num_components`` dims) in which the Frechet distance between generated
  and real test images is measured, ``||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^{1/2})``
  (the FID formula of Heusel et al. 2017, on PCA features instead of Inception features);
* a logistic-regression digit classifier whose mean top-1 probability on generated images
  (``confidence``) and number of distinct predicted classes (``class_coverage``) tell whether the
  samples look like digits and cover all ten.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from ..data.digits import load_digits_arrays


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two ``(N, D)`` feature sets."""
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def _flatten(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 1)`` or ``(N, H, W)`` in ``[0, 1]`` -> ``(N, H*W)``."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4:
        if images.shape[-1] != 1:
            raise ValueError(f"DigitsJudge expects 1-channel images (N, H, W, 1), got shape {images.shape}")
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"DigitsJudge expects images shaped (N, H, W, 1) in [0, 1], got shape {images.shape}")
    return images.reshape(len(images), -1)


class DigitsJudge:
    """Scores generated digits against the real test split; see the module docstring."""

    def __init__(self, resolution: int = 16, num_components: int = 32, seed: int = 0) -> None:
        self.resolution = resolution
        train_images, train_labels = load_digits_arrays("train", resolution)
        test_images, _ = load_digits_arrays("test", resolution)
        train = _flatten((train_images.permute(0, 2, 3, 1).numpy() + 1) / 2)
        self.test_pixels = _flatten((test_images.permute(0, 2, 3, 1).numpy() + 1) / 2)
        self.pca = PCA(n_components=num_components, random_state=seed).fit(train)
        self.classifier = LogisticRegression(max_iter=2000).fit(train, train_labels.numpy())
        self.test_features = self.pca.transform(self.test_pixels)

    def evaluate(self, images: np.ndarray) -> dict[str, float]:
        """``images``: ``(N, H, W, 1)`` in ``[0, 1]`` at the judge's resolution, N >= 2."""
        pixels = _flatten(images)
        expected = self.resolution * self.resolution
        if pixels.shape[1] != expected:
            raise ValueError(f"DigitsJudge was fitted at {self.resolution}x{self.resolution}, got {images.shape}")
        probabilities = self.classifier.predict_proba(pixels)
        return {
            "frechet_distance": frechet_distance(self.pca.transform(pixels), self.test_features),
            "confidence": float(probabilities.max(1).mean()),
            "class_coverage": int(len(np.unique(probabilities.argmax(1)))),
        }
