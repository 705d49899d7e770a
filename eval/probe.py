"""Judges for DDAE++: linear probes of a diffusion model's features and a classifier Frechet distance.

* :func:`linear_probe`: standardise features (mean/std of the training split), fit multinomial
  logistic regression on the training split, report top-1 accuracy on the held-out split.
* :func:`probe_sweep`: that probe for every (timestep, layer) pair of a pipeline's features, *selected on
  a validation split carved from the training split* (stratified, :func:`validation_split`); the chosen
  pair, the self-conditioning layer ``L`` and the checkpoint's default are then refitted on the whole
  training split and scored on the test split once, with per-item correctness kept for a paired
  McNemar test between checkpoints (:func:`paired_probe_comparison`). Works on
  :class:`~selfgen.pipelines.ddae.DDAEPipeline` (pooled DiT blocks) and on the DDPM baseline
  (``UNet2DModel``: spatially pooled outputs of its down, mid and up blocks, numbered in that order).
* :class:`DigitsClassifier`: a small CNN trained by :func:`train_digits_classifier` on the digits train
  split only (it shares no weights with any generator). Its penultimate 64-d activations are the feature
  space of :func:`generation_metrics`' Frechet distance ``||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^{1/2})``
  between samples and the real test split: an FID with a digits network in place of Inception.
  ``python -m selfgen.eval.probe assets/digits-classifier`` rebuilds the bundled judge.
* Inception FID, only from weights the user supplies (torchvision ``inception_v3`` state dict).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..data.digits import load_digits_arrays
from .digits import DigitsJudge, frechet_distance
from .statistics import bootstrap_interval, mcnemar

BUNDLED_CLASSIFIER = Path(__file__).resolve().parents[1] / "assets" / "digits-classifier" / "model.safetensors"
DEFAULT_TIMESTEPS = (0, 25, 50, 100, 200, 400)


def probe_correct(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Per-test-item correctness (bool ``(N,)``) of logistic regression fitted on standardised training features."""
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels must have the same length for both splits")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    probe.fit(np.asarray(train_x, dtype=np.float64), train_y)
    return probe.predict(np.asarray(test_x, dtype=np.float64)) == np.asarray(test_y)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Top-1 test accuracy of logistic regression on standardised features."""
    return float(probe_correct(train_x, train_y, test_x, test_y).mean())


def validation_split(labels: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(fit_index, validation_index)`` of a training split; selection never sees the test split."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    return train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)


def denoiser(pipe) -> nn.Module:
    """The pipeline's noise-prediction network (``transformer`` for DDAE++, ``unet`` for DDPM)."""
    return pipe.transformer if hasattr(pipe, "transformer") else pipe.unet


def pipeline_resolution(pipe) -> int:
    return denoiser(pipe).config.sample_size


def unet_block_outputs(unet, noisy: torch.Tensor, timestep: int, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Spatially pooled outputs of a ``UNet2DModel``'s blocks (down..., mid, up..., 1-based) via forward hooks."""
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    if not layers or not all(1 <= layer <= len(blocks) for layer in layers):
        raise ValueError(f"UNet layers must each be in [1, {len(blocks)}], got {list(layers)}")
    pooled: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            pooled[layer] = hidden.float().mean(dim=(2, 3))

        return hook

    handles = [blocks[layer - 1].register_forward_hook(keep(layer)) for layer in layers]
    try:
        unet(noisy, timestep)
    finally:
        for handle in handles:
            handle.remove()
    return pooled


@torch.no_grad()
def feature_sets(pipe, images: torch.Tensor, timesteps, layers, batch_size: int = 256) -> dict[tuple, torch.Tensor]:
    """``{(t, l): (N, D)}`` for a DDAE++ pipeline (its own extractor) or a UNet pipeline (block hooks)."""
    if hasattr(pipe, "extract_feature_sets"):
        return pipe.extract_feature_sets(images, timesteps, layers, batch_size=batch_size)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    features = {}
    for step in timesteps:
        noisy = pipe.scheduler.add_noise(images, noise, torch.tensor([step]))
        chunks = [
            unet_block_outputs(pipe.unet, noisy[start : start + batch_size], step, tuple(layers))
            for start in range(0, len(noisy), batch_size)
        ]
        for layer in layers:
            features[(step, layer)] = torch.cat([chunk[layer] for chunk in chunks])
    return features


def probe_sweep(pipe, train, test, timesteps=None, layers=None, validation_fraction: float = 0.2) -> dict:
    """Linear probe over (timestep, layer), selected on validation; ``train``/``test`` are ``(images in [-1, 1], labels)``.

    Defaults: :data:`DEFAULT_TIMESTEPS` and every block. Every pair is fitted on the training split minus a
    stratified ``validation_fraction`` and scored on that validation part (``"validation"``). The test
    split is then scored once for each of: ``"selected"`` (the best validation pair), ``"bottleneck"``
    (layer ``L = self_condition_layer`` at its best validation timestep; DDAE++ only) and ``"default"``
    (the checkpoint's ``feature_timestep``/``feature_layer``; DDAE++ only), each refitted on the whole
    training split; ``test_correct`` holds their per-item correctness for :func:`paired_probe_comparison`."""
    model = denoiser(pipe)
    num_layers = model.config.depth if hasattr(model.config, "depth") else 2 * len(model.down_blocks) + 1
    timesteps, layers = list(timesteps or DEFAULT_TIMESTEPS), list(layers or range(1, num_layers + 1))
    defaults = {}
    if hasattr(model, "feature_layer"):
        defaults["default"] = (model.config.feature_timestep, model.feature_layer)
        timesteps, layers = sorted({*timesteps, model.config.feature_timestep}), sorted({*layers, model.feature_layer})
    train_sets = feature_sets(pipe, train[0], timesteps, layers)
    test_sets = feature_sets(pipe, test[0], timesteps, layers)
    train_y, test_y = train[1].numpy(), test[1].numpy()
    fit, held = validation_split(train_y, validation_fraction)
    validation = {
        key: linear_probe(value.numpy()[fit], train_y[fit], value.numpy()[held], train_y[held])
        for key, value in train_sets.items()
    }
    choices = {"selected": max(validation, key=validation.get), **defaults}
    bottleneck = getattr(model, "self_condition_layer", None)
    if bottleneck in layers:
        choices["bottleneck"] = max((key for key in validation if key[1] == bottleneck), key=validation.get)
    result = {"validation": {f"t={t},layer={l}": value for (t, l), value in validation.items()}, "test_correct": {}}
    for name, key in choices.items():
        correct = probe_correct(train_sets[key].numpy(), train_y, test_sets[key].numpy(), test_y)
        result[name] = {
            "timestep": key[0], "layer": key[1], "validation_accuracy": validation[key], "test_accuracy": float(correct.mean())
        }
        result["test_correct"][name] = correct.astype(int).tolist()
    return result


def paired_probe_comparison(method: dict, reference: dict) -> dict[str, dict[str, float]]:
    """McNemar (:func:`~selfgen.eval.statistics.mcnemar`) between two :func:`probe_sweep` results on the same
    test items, for every probe both have (``selected``, ``bottleneck``, ``default``); ``a`` is ``method``."""
    shared = method["test_correct"].keys() & reference["test_correct"].keys()
    return {name: mcnemar(method["test_correct"][name], reference["test_correct"][name]) for name in sorted(shared)}


class DigitsClassifier(nn.Module):
    """A small CNN for 16x16 digits in ``[-1, 1]``: three convolutions, global pooling to 64 features, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, 16, 16):
            raise ValueError(f"DigitsClassifier expects (N, 1, 16, 16) images in [-1, 1], got {tuple(images.shape)}")
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_digits_classifier(steps: int = 600, seed: int = 0) -> DigitsClassifier:
    """Adam, batch 128, random +-1 pixel shifts, on the digits train split only (about 99% test accuracy)."""
    torch.manual_seed(seed)
    images, labels = load_digits_arrays("train", 16)
    model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        index = torch.randint(0, len(images), (128,))
        shift = torch.randint(-1, 2, (2,)).tolist()
        batch = torch.roll(images[index], shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(model(batch), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def load_digits_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """The judge from ``path`` (default: the bundled ``assets/digits-classifier``), or trained now if absent."""
    path = Path(path) if path is not None else BUNDLED_CLASSIFIER
    model = DigitsClassifier()
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    if path != BUNDLED_CLASSIFIER:
        raise FileNotFoundError(f"digits classifier weights not found: {path} (a safetensors file)")
    return train_digits_classifier()


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """numpy ``(N, H, W, C)`` in ``[0, 1]`` -> torch ``(N, C, H, W)`` in ``[-1, 1]``."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2) * 2 - 1


@torch.no_grad()
def inception_features(images: torch.Tensor, weights: str | Path) -> np.ndarray:
    """2048-d pool features of torchvision's Inception-v3 with the user's ``weights`` (.safetensors or .pth)."""
    from torchvision.models import inception_v3

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"inception_weights: no such file {weights} (torchvision inception_v3 state dict)")
    if weights.suffix == ".safetensors":
        state = load_file(str(weights))
    else:  # tensors only: a .pth that would run code when unpickled is refused
        state = torch.load(weights, map_location="cpu", weights_only=True)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(state)
    model.fc = nn.Identity()
    model.eval()
    pixels = F.interpolate((images.expand(-1, 3, -1, -1) + 1) / 2, size=(299, 299), mode="bilinear")
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return torch.cat([model((chunk - mean) / std) for chunk in pixels.split(64)]).numpy()


@torch.no_grad()
def generation_metrics(
    samples: np.ndarray, real: torch.Tensor, classifier: str | None = None, inception_weights: str | None = None
) -> dict[str, float]:
    """Sample quality of digits ``samples`` ``(N, 16, 16, 1)`` in ``[0, 1]`` against ``real`` ``(M, 1, 16, 16)`` in ``[-1, 1]``:
    ``classifier_fd`` (Frechet distance in :class:`DigitsClassifier` features) with ``classifier_fd_interval``,
    its 95% bootstrap interval over the samples (the real set held fixed), the judge's confidence,
    DigitsJudge's PCA Frechet distance and class coverage, and ``inception_fd`` when weights are given."""
    judge = load_digits_classifier(classifier)
    fake = to_tensor(samples)
    fake_features, real_features = judge.features(fake).numpy(), judge.features(real).numpy()
    metrics = {
        "classifier_fd": frechet_distance(fake_features, real_features),
        "classifier_fd_interval": bootstrap_interval(lambda rows: frechet_distance(rows, real_features), fake_features),
        "classifier_confidence": float(judge(fake).softmax(-1).max(-1).values.mean()),
        "pca_fd": DigitsJudge(resolution=16).evaluate(samples)["frechet_distance"],
        "class_coverage": int(judge(fake).argmax(-1).unique().numel()),
        "num_samples": len(samples),
    }
    if inception_weights:
        metrics["inception_fd"] = frechet_distance(
            inception_features(fake, inception_weights), inception_features(real, inception_weights)
        )
    return metrics


def main(argv: list[str]) -> None:
    """``python -m selfgen.eval.probe FOLDER``: train the digits judge and save ``FOLDER/model.safetensors``."""
    if len(argv) != 1:
        raise SystemExit("usage: python -m selfgen.eval.probe OUTPUT_FOLDER")
    model = train_digits_classifier()
    images, labels = load_digits_arrays("test", 16)
    accuracy = float((model(images).argmax(-1) == labels).float().mean())
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    print(f"saved {folder / 'model.safetensors'}; test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
