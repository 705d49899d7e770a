"""Paired generation comparison of two sample sets drawn from the same starting noise (row i <-> row i):
classifier FD difference with a paired bootstrap interval (same resampled rows for both), and the mean
per-sample judge-confidence difference +- 1.96 SE, against the 360 test digits or (--split validation) the
validation digits the probe and the sampler choice select on. python paired_gen.py A.npy B.npy [--split validation]"""
import argparse, json
import numpy as np, torch
from selfgen.data.digits import load_digits_arrays
from selfgen.eval.probe import load_digits_classifier, to_tensor, frechet_distance, validation_split
from selfgen.eval.statistics import mean_difference

parser = argparse.ArgumentParser()
parser.add_argument("a")
parser.add_argument("b")
parser.add_argument("--split", choices=["test", "validation"], default="test")
args = parser.parse_args()
a, b = np.load(args.a), np.load(args.b)
judge = load_digits_classifier()
if args.split == "test":
    test, _ = load_digits_arrays("test", 16)
else:
    images, labels = load_digits_arrays("train", 16)
    test = images[validation_split(labels.numpy())[1]]
with torch.no_grad():
    real = judge.features(test).numpy()
    fa, fb = judge.features(to_tensor(a)).numpy(), judge.features(to_tensor(b)).numpy()
    ca = judge(to_tensor(a)).softmax(-1).max(-1).values.numpy()
    cb = judge(to_tensor(b)).softmax(-1).max(-1).values.numpy()
rng = np.random.default_rng(0)
diffs = []
for _ in range(200):
    idx = rng.integers(0, len(a), len(a))
    diffs.append(frechet_distance(fa[idx], real) - frechet_distance(fb[idx], real))
d, se = mean_difference(cb, ca)
print(json.dumps({
    "split": args.split, "fd_a": frechet_distance(fa, real), "fd_b": frechet_distance(fb, real),
    "fd_diff_a_minus_b": frechet_distance(fa, real) - frechet_distance(fb, real),
    "fd_diff_paired_bootstrap_95": [float(x) for x in np.quantile(diffs, [0.025, 0.975])],
    "conf_a": float(ca.mean()), "conf_b": float(cb.mean()), "conf_diff": d, "conf_diff_ci95": [d - 1.96 * se, d + 1.96 * se],
    "pixel_mean_abs_diff": float(np.abs(a - b).mean()),
}))
