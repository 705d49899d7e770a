"""Why do the DiT's strokes break where the UNet's do not? Measured on the VALIDATION digits (the stratified 20% of
the training split the probe selects on; the test digits are never read) and on sample files.

The 16x16 digits are bilinear 2x upsamplings of scikit-learn's 8x8 digits, so every real image lies in a 64-d
subspace S = range(U) (U: 256 x 64, the upsampling map). Any energy of an image outside S is drawn by the model,
not by the data ("off-grid" energy); it is also what a 2x2 patch grid produces when neighbouring tokens disagree.

  models: eps-MSE and x0-MSE per timestep (same noise for every model), the x0 error split into its part in S and
          its part outside S; MODEL::RAW.safetensors loads raw (non-EMA) weights into MODEL's network.
  --samples: off-grid share ||x - Px||^2 / ||x - mean||^2, the patch-boundary ratio (mean |difference| across
          the 2x2 patch borders / within patches) and the share of images the digits judge (assets/digits-classifier)
          gives >= 0.9 confidence, of sample files (N, 16, 16, 1) in [0, 1], against the validation digits.

OMP_NUM_THREADS=1 python benchmarks/ddae_diagnostics/strokes.py --models assets/ddpm-digits assets/ddae-digits ...
  [--samples A.npy B.npy ...] [--out outputs/strokes.jsonl]
"""
import argparse, json
import numpy as np, torch
import torch.nn.functional as F
from selfgen.data.digits import load_digits_arrays
from selfgen.eval.probe import denoiser, load_digits_classifier, validation_split
from selfgen.train.ddae import load_pipeline

TIMESTEPS = [10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900]


def grid_projector(size: int = 16) -> torch.Tensor:
    """``P = U U^+`` (256 x 256), the orthogonal projector onto the bilinear upsamplings of 8x8 images."""
    basis = torch.eye(64).reshape(64, 1, 8, 8)
    up = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=False).reshape(64, -1).T
    return up @ torch.linalg.pinv(up)


def image_stats(images: torch.Tensor, projector: torch.Tensor) -> dict:
    """Off-grid share and patch-boundary ratio of ``images`` ``(N, 1, 16, 16)`` in [-1, 1]."""
    flat = images.reshape(len(images), -1)
    centred = flat - flat.mean(0)
    off = flat - flat @ projector
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs()
    border = torch.cat([dx[..., 1::2].flatten(), dy[..., 1::2, :].flatten()]).mean()
    within = torch.cat([dx[..., 0::2].flatten(), dy[..., 0::2, :].flatten()]).mean()
    with torch.no_grad():
        confidence = load_digits_classifier()(images).softmax(-1).max(-1).values
    return {
        "offgrid_share": float((off**2).sum() / (centred**2).sum()),
        "border_over_within": float(border / within),
        "judge_confident_share": float((confidence >= 0.9).float().mean()),
    }


def load_model(path: str, scheduler: str):
    """The pipeline saved at ``MODEL``; ``MODEL::RAW.safetensors`` also loads raw (non-EMA) checkpoint weights
    (e.g. ``checkpoints/step-N/model.safetensors`` of a run continuing MODEL) into its network."""
    model, _, raw = path.partition("::")
    pipe = load_pipeline(model, scheduler)
    if raw:
        from safetensors.torch import load_file

        denoiser(pipe).load_state_dict(load_file(raw))
    return pipe


def model_errors(path: str, images: torch.Tensor, projector: torch.Tensor, timesteps=TIMESTEPS) -> dict:
    pipe = load_model(path, "ddpm")
    net = denoiser(pipe).eval()
    alphas = pipe.scheduler.alphas_cumprod
    generator = torch.Generator().manual_seed(0)
    rows = {}
    with torch.no_grad():
        for t in timesteps:
            noise = torch.randn(images.shape, generator=generator)
            noisy = pipe.scheduler.add_noise(images, noise, torch.tensor([t]))
            output = net(noisy, t)
            eps = output.sample if hasattr(output, "sample") else output[0]
            a = alphas[t]
            x0 = (noisy - (1 - a).sqrt() * eps) / a.sqrt()
            error = (x0 - images).reshape(len(images), -1)
            off = error - error @ projector
            rows[t] = {
                "eps_mse": round(float(((eps - noise) ** 2).mean()), 5),
                "x0_mse": round(float((error**2).mean()), 5),
                "x0_offgrid_mse": round(float((off**2).mean()), 5),
            }
    rows["mean_eps_mse"] = round(float(np.mean([rows[t]["eps_mse"] for t in timesteps])), 5)
    return rows


def load_samples(path: str) -> torch.Tensor:
    """A sample file ``(N, 16, 16, 1)`` in [0, 1] as ``(N, 1, 16, 16)`` in [-1, 1]."""
    return torch.from_numpy(np.load(path)).permute(0, 3, 1, 2) * 2 - 1


def write_records(records: list[dict], out: str) -> None:
    """Print each record and append it to the JSON-lines file ``out``."""
    with open(out, "a") as f:
        for record in records:
            print(json.dumps(record), flush=True)
            f.write(json.dumps(record) + "\n")


def parse_cli(default_out: str) -> argparse.Namespace:
    """``--models A B ...``, ``--samples X.npy ...`` and ``--out FILE.jsonl`` (default ``default_out``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--samples", nargs="*", default=[])
    parser.add_argument("--out", default=default_out)
    return parser.parse_args()


def main() -> None:
    args = parse_cli("outputs/strokes.jsonl")
    images, labels = load_digits_arrays("train", 16)
    images = images[validation_split(labels.numpy())[1]]
    projector = grid_projector()
    records = [{"source": "validation digits", **image_stats(images, projector)}]
    for path in args.samples:
        records.append({"source": path, **image_stats(load_samples(path), projector)})
    for path in args.models:
        records.append({"source": path, **model_errors(path, images, projector)})
    write_records(records, args.out)


if __name__ == "__main__":
    main()
