"""Self-conditioned minus ablation over paired training seeds, from `selfgen eval ddae` output folders:
python seeds.py [--samples samples.npy | --probe_only] SC_SEED0:NOSC_SEED0 SC_SEED1:NOSC_SEED1 ...
`--probe_only` (e.g. textures, evaluated with --num_samples 0): only the probes, per seed and over seeds.
Per seed: classifier FD of both arms against the 360 test digits (the same 512 starting noises in both arms),
the paired FD difference with a paired bootstrap 95% interval over the samples, the judge's confidence of
both arms and its paired difference (+- 1.96 SE over the 512 noise pairs), and each probe's McNemar on the
same 360 test digits. `--samples` names the sample file inside each folder (e.g. another sampler's samples).
Over seeds: every per-seed quantity as mean +- t_{0.975, n-1} x SE over seeds (training-seed noise; n >= 2);
the FD difference also with a bootstrap interval that resamples samples within every seed (sampling noise
only); the probes also pooled over seeds x test digits (McNemar on the concatenated pairs, difference +- 1.96 SE)."""
import argparse, json
from pathlib import Path
import numpy as np, torch
from scipy.stats import t as student_t
from selfgen.data.digits import load_digits_arrays
from selfgen.eval.probe import load_digits_classifier, to_tensor, frechet_distance
from selfgen.eval.statistics import mcnemar, mean_difference, standard_error

parser = argparse.ArgumentParser()
parser.add_argument("pairs", nargs="+")
parser.add_argument("--samples", default="samples.npy")
parser.add_argument("--probe_only", action="store_true")
args = parser.parse_args()
if not args.probe_only:
    judge = load_digits_classifier()
    test, _ = load_digits_arrays("test", 16)
    with torch.no_grad():
        real = judge.features(test).numpy()
rng = np.random.default_rng(0)
seeds, boot, pooled = [], [], {"selected": ([], []), "bottleneck": ([], [])}
for pair in args.pairs:
    sc, nosc = (Path(p) for p in pair.split(":"))
    ma, mb = (json.loads((d / "metrics.json").read_text())["probe"] for d in (sc, nosc))
    row = {"pair": pair}
    if not args.probe_only:
        with torch.no_grad():
            images = [to_tensor(np.load(d / args.samples)) for d in (sc, nosc)]
            fa, fb = (judge.features(x).numpy() for x in images)
            ca, cb = (judge(x).softmax(-1).max(-1).values.numpy() for x in images)
        idx = [rng.integers(0, len(fa), len(fa)) for _ in range(200)]
        diffs = np.array([frechet_distance(fa[i], real) - frechet_distance(fb[i], real) for i in idx])
        boot.append(diffs)
        conf_diff, conf_se = mean_difference(cb, ca)
        row.update(fd_sc=frechet_distance(fa, real), fd_nosc=frechet_distance(fb, real))
        row["fd_diff"] = row["fd_sc"] - row["fd_nosc"]
        row["fd_diff_paired_bootstrap_95"] = [float(x) for x in np.quantile(diffs, [0.025, 0.975])]
        row.update(conf_sc=float(ca.mean()), conf_nosc=float(cb.mean()), conf_diff=conf_diff,
                   conf_diff_95=[conf_diff - 1.96 * conf_se, conf_diff + 1.96 * conf_se])
    for probe in pooled:
        a, b = ma["test_correct"][probe], mb["test_correct"][probe]
        pooled[probe][0].extend(a), pooled[probe][1].extend(b)
        row[probe] = {"sc": [ma[probe]["timestep"], ma[probe]["layer"], ma[probe]["test_accuracy"]],
                      "nosc": [mb[probe]["timestep"], mb[probe]["layer"], mb[probe]["test_accuracy"]], **mcnemar(a, b)}
    seeds.append(row)
    print(json.dumps(row))


def over_seeds(values) -> dict:
    values = np.asarray(values, dtype=float)
    result = {"per_seed": values.round(4).tolist(), "mean": float(values.mean())}
    if len(values) > 1:
        half = student_t.ppf(0.975, len(values) - 1) * standard_error(values)
        result["t95"] = [float(values.mean() - half), float(values.mean() + half)]
    return result


summary = {"num_seeds": len(seeds), "samples": None if args.probe_only else args.samples}
if not args.probe_only:
    for key in ("fd_sc", "fd_nosc", "fd_diff", "conf_sc", "conf_nosc", "conf_diff"):
        summary[key] = over_seeds([r[key] for r in seeds])
    summary["fd_diff"]["sampling_bootstrap_95"] = [float(x) for x in np.quantile(np.mean(boot, axis=0), [0.025, 0.975])]
for probe, (a, b) in pooled.items():
    for arm in ("sc", "nosc"):
        summary[f"{probe}_{arm}_accuracy"] = over_seeds([r[probe][arm][2] for r in seeds])
    summary[f"{probe}_difference"] = over_seeds([r[probe]["accuracy_difference"] for r in seeds])
    summary[f"{probe}_pooled"] = mcnemar(a, b)
print(json.dumps(summary))
