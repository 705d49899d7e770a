"""LaSeR's self-reward on held-out problems: best-of-N by ``r_s`` vs majority vote on the same samples,
paired by problem, and ``r_s``'s AUC at telling right from wrong samples.

    OMP_NUM_THREADS=1 python benchmarks/llm_self_reward.py --models runs/laser-arith-llama/pipeline \\
        [assets/lm-arith-llama] [--digits 4] [--problems 500] [--n 4] [--out self_reward.json]

For each model (a LaSeR policy; the starting model is the control whose ``log pi(z_c | x, y)`` was never
trained) ``--n`` samples at temperature 1 per held-out ``d``-digit addition (the test split, seed
``EVAL_SEED``: the first ``--problems`` of the problems ``benchmarks/llm_lengths.py`` scores), then
:meth:`selfgen.train.llm.laser.LaSeRTrainer.best_of_n_table`. Printed per model: best-of-N, majority
vote, one sample and any-of-N (oracle) accuracy; best-of-N - majority vote paired by problem (95%
interval, McNemar p); best-of-N by the sample's mean token log-probability (the policy's own
likelihood, never trained as a judge), its paired difference to the vote and its AUCs; ``self_reward_auc``
over all finished samples and ``within_problem_auc`` (pairs of one problem: what best-of-N uses), each
with a 95% bootstrap interval over problems. The ranking does not
depend on ``c_ref``, so it is fixed here (``reference_logprob``) instead of measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from selfgen.data.tasks import ArithmeticTask
from selfgen.eval.statistics import bootstrap_interval, mcnemar, mean_difference
from selfgen.train.llm.laser import LaSeRConfig, LaSeRTrainer, self_reward_aucs


def table_of(model: str, digits: int, problems: int, n: int) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as scratch:
        config = LaSeRConfig(
            output_dir=scratch, min_digits=digits, max_digits=digits, eval_problems=problems, best_of_n=n,
            best_of_n_problems=problems, reference_logprob=0.0, beta=0.0, max_new_tokens=16 + 12 * (digits + 1),
            generation_batch_size=256,
        )
        trainer = LaSeRTrainer(model=model, task=ArithmeticTask("add", digits, digits), config=config)
        return trainer.best_of_n_table(trainer.eval_set)


def auc_interval(table: dict[str, np.ndarray], key: str) -> tuple[float, float]:
    problems = np.unique(table["problem"])

    def statistic(rows: np.ndarray) -> float:
        picked = np.concatenate([np.flatnonzero(table["problem"] == p) for p in rows[:, 0]])
        relabel = np.repeat(np.arange(len(rows)), [np.sum(table["problem"] == p) for p in rows[:, 0]])
        return self_reward_aucs(table["scores"][picked], table["correct"][picked], relabel)[key]

    return bootstrap_interval(statistic, problems[:, None], num_resamples=200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
        table = table_of(model, args.digits, args.problems, args.n)
        diff, se = mean_difference(table["vote"], table["best"])
        aucs = self_reward_aucs(table["scores"], table["correct"], table["problem"])
        intervals = {key: auc_interval(table, key) for key in aucs}
        print(f"{model}: {args.problems} held-out {args.digits}-digit problems x {args.n} samples at T=1")
        print("  " + "  ".join(f"{k} {table[k].mean():.3f}" for k in ("best", "confident", "vote", "sample", "oracle"))
              + f"  (sample = the first of the {args.n})")
        print(f"  best-of-{args.n} - majority vote {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]"
              f"  McNemar p={mcnemar(table['best'], table['vote'])['p_value']:.2g}")
        diff, se = mean_difference(table["vote"], table["confident"])
        confidence = self_reward_aucs(table["confidence"], table["correct"], table["problem"])
        print(f"  by mean token logprob: - majority vote {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]  "
              + "  ".join(f"{k} {v:.3f}" for k, v in confidence.items()))
        print("  " + "  ".join(f"{k} {v:.3f} [{intervals[k][0]:.3f}, {intervals[k][1]:.3f}]" for k, v in aucs.items()),
              flush=True)
        results[model] = {key: value.tolist() for key, value in table.items()}
        for key in ("scores", "confidence"):
            results[model][key] = [x if np.isfinite(x) else None for x in table[key].tolist()]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"digits": args.digits, "n": args.n, "tables": results}))


if __name__ == "__main__":
    main()
