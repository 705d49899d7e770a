"""Does the foundation UNet read better because it fits (or copies) the 1437 training digits more closely, or because
it generalises better? Two measurements (issue #20, tenth pass); nothing here selects anything.

  --models: x0-MSE per timestep on TRAINING digits (the stratified 20% validation part, which both networks trained
            on) and on the 360 held-out TEST digits (read only for this train-vs-held-out gap), the same noise seed
            for every model; the ratio test / validation says how much of a model's fit is specific to its training
            images.
  --samples: for each sample, the pixel L2 distance to its nearest training digit (all 1437), against the same
            distance of each held-out test digit (what a new digit from the data distribution looks like); "copies":
            the share of samples closer to a training digit than the 5th percentile of the test digits' distances.

OMP_NUM_THREADS=1 python benchmarks/ddae_diagnostics/memorization.py --models assets/ddpm-digits assets/ddae-digits \
  --samples A.npy B.npy [--out outputs/memorization.jsonl]
"""
import argparse, json
import numpy as np, torch
from selfgen.data.digits import load_digits_arrays
from selfgen.eval.probe import denoiser, validation_split
from selfgen.train.ddae import load_pipeline

TIMESTEPS = [100, 200, 300, 400, 500, 600, 700]


def x0_errors(path: str, images: torch.Tensor) -> dict[int, float]:
    """Mean ``||x0_hat - x0||^2`` per pixel at each t, noise drawn from seed 0 (the same for every model)."""
    pipe = load_pipeline(path, "ddpm")
    net, alphas = denoiser(pipe).eval(), pipe.scheduler.alphas_cumprod
    generator, rows = torch.Generator().manual_seed(0), {}
    with torch.no_grad():
        for t in TIMESTEPS:
            noise = torch.randn(images.shape, generator=generator)
            noisy = pipe.scheduler.add_noise(images, noise, torch.tensor([t]))
            output = net(noisy, t)
            eps = output.sample if hasattr(output, "sample") else output[0]
            x0 = (noisy - (1 - alphas[t]).sqrt() * eps) / alphas[t].sqrt()
            rows[t] = float(((x0 - images) ** 2).mean())
    return rows


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """L2 distance (over the 256 pixels in [-1, 1]) from each query to its nearest reference."""
    return torch.cdist(queries.reshape(len(queries), -1), references.reshape(len(references), -1)).min(1).values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--samples", nargs="*", default=[])
    parser.add_argument("--out", default="outputs/memorization.jsonl")
    args = parser.parse_args()
    train, labels = load_digits_arrays("train", 16)
    validation = train[validation_split(labels.numpy())[1]]
    test = load_digits_arrays("test", 16)[0]
    records = []
    for path in args.models:
        fit, held_out = x0_errors(path, validation), x0_errors(path, test)
        records.append({"model": path, "x0_mse_validation": fit, "x0_mse_test": held_out,
                        "test_over_validation": {t: round(held_out[t] / fit[t], 3) for t in TIMESTEPS}})
    reference = nearest_distances(test, train)
    threshold = float(reference.quantile(0.05))
    records.append({"source": "test digits", "nn_median": float(reference.median()), "nn_p05": threshold})
    for path in args.samples:
        samples = torch.from_numpy(np.load(path)).permute(0, 3, 1, 2) * 2 - 1
        distance = nearest_distances(samples, train)
        records.append({"source": path, "nn_median": float(distance.median()),
                        "copies": float((distance < threshold).float().mean())})
    with open(args.out, "a") as f:
        for record in records:
            print(json.dumps(record), flush=True)
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
