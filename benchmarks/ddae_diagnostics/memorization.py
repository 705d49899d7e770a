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
import torch
from selfgen.data.digits import load_digits_arrays
from selfgen.eval.probe import validation_split
from strokes import grid_projector, load_samples, model_errors, parse_cli, write_records  # same folder: run from the repository root as a script

TIMESTEPS = [100, 200, 300, 400, 500, 600, 700]


def x0_errors(path: str, images: torch.Tensor) -> dict[int, float]:
    """Mean ``||x0_hat - x0||^2`` per pixel at each t (strokes.py's measurement: noise from seed 0, the same for
    every model)."""
    rows = model_errors(path, images, grid_projector(), TIMESTEPS)
    return {t: rows[t]["x0_mse"] for t in TIMESTEPS}


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """L2 distance (over the 256 pixels in [-1, 1]) from each query to its nearest reference."""
    return torch.cdist(queries.reshape(len(queries), -1), references.reshape(len(references), -1)).min(1).values


def model_record(path: str, validation: torch.Tensor, test: torch.Tensor) -> dict:
    fit, held_out = x0_errors(path, validation), x0_errors(path, test)
    return {"model": path, "x0_mse_validation": fit, "x0_mse_test": held_out,
            "test_over_validation": {t: round(held_out[t] / fit[t], 3) for t in TIMESTEPS}}


def sample_record(path: str, train: torch.Tensor, threshold: float) -> dict:
    distance = nearest_distances(load_samples(path), train)
    return {"source": path, "nn_median": float(distance.median()), "copies": float((distance < threshold).float().mean())}


def main() -> None:
    opts = parse_cli("outputs/memorization.jsonl")
    train, labels = load_digits_arrays("train", 16)
    validation, test = train[validation_split(labels.numpy())[1]], load_digits_arrays("test", 16)[0]
    reference = nearest_distances(test, train)
    threshold = float(reference.quantile(0.05))
    records = [model_record(path, validation, test) for path in opts.models]
    records.append({"source": "test digits", "nn_median": float(reference.median()), "nn_p05": threshold})
    records += [sample_record(path, train, threshold) for path in opts.samples]
    write_records(records, opts.out)


if __name__ == "__main__":
    main()
