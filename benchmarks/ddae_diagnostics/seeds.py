"""Self-conditioned minus ablation over paired training seeds, from `selfgen eval ddae` output folders:
python seeds.py SC_SEED0:NOSC_SEED0 SC_SEED1:NOSC_SEED1 ...
Per seed: classifier FD of both arms (same 512 starting noises), the paired FD difference with a paired
bootstrap 95% interval over the samples, and each probe's McNemar on the same 360 test digits.
Over seeds: the mean FD difference with (a) a bootstrap interval that resamples samples within every seed
(sampling noise only) and (b) mean +- t_{0.975, n-1} x SE over seeds (training-seed noise; n >= 2); the
probes pooled over seeds x test digits (McNemar on the concatenated pairs, difference +- 1.96 SE)."""
import json, sys
from pathlib import Path
import numpy as np, torch
from scipy.stats import t as student_t
from selfgen.data.digits import load_digits_arrays
from selfgen.eval.probe import load_digits_classifier, to_tensor, frechet_distance
from selfgen.eval.statistics import mcnemar, standard_error

judge = load_digits_classifier()
test, _ = load_digits_arrays("test", 16)
with torch.no_grad():
    real = judge.features(test).numpy()
rng = np.random.default_rng(0)
seeds, boot, pooled = [], [], {"selected": ([], []), "bottleneck": ([], [])}
for pair in sys.argv[1:]:
    sc, nosc = (Path(p) for p in pair.split(":"))
    with torch.no_grad():
        fa, fb = (judge.features(to_tensor(np.load(d / "samples.npy"))).numpy() for d in (sc, nosc))
    idx = [rng.integers(0, len(fa), len(fa)) for _ in range(200)]
    diffs = np.array([frechet_distance(fa[i], real) - frechet_distance(fb[i], real) for i in idx])
    boot.append(diffs)
    ma, mb = (json.loads((d / "metrics.json").read_text())["probe"] for d in (sc, nosc))
    row = {"pair": pair, "fd_sc": frechet_distance(fa, real), "fd_nosc": frechet_distance(fb, real)}
    row["fd_diff"] = row["fd_sc"] - row["fd_nosc"]
    row["fd_diff_paired_bootstrap_95"] = [float(x) for x in np.quantile(diffs, [0.025, 0.975])]
    for probe in pooled:
        a, b = ma["test_correct"][probe], mb["test_correct"][probe]
        pooled[probe][0].extend(a), pooled[probe][1].extend(b)
        row[probe] = {"sc": [ma[probe]["timestep"], ma[probe]["layer"], ma[probe]["test_accuracy"]],
                      "nosc": [mb[probe]["timestep"], mb[probe]["layer"], mb[probe]["test_accuracy"]], **mcnemar(a, b)}
    seeds.append(row)
    print(json.dumps(row))
fd = np.array([r["fd_diff"] for r in seeds])
summary = {"num_seeds": len(seeds), "fd_diff_per_seed": fd.round(2).tolist(), "fd_diff_mean": float(fd.mean()),
           "fd_diff_mean_sampling_bootstrap_95": [float(x) for x in np.quantile(np.mean(boot, axis=0), [0.025, 0.975])]}
if len(fd) > 1:
    half = student_t.ppf(0.975, len(fd) - 1) * standard_error(fd)
    summary["fd_diff_mean_over_seeds_t95"] = [float(fd.mean() - half), float(fd.mean() + half)]
for probe, (a, b) in pooled.items():
    summary[f"{probe}_pooled"] = mcnemar(a, b)
print(json.dumps(summary))
