"""Greedy accuracy by addition length, and paired comparisons of models on the same problems.

    OMP_NUM_THREADS=1 python benchmarks/llm_lengths.py --models assets/lm-arith-llama [more models ...]
        [--lengths 1 2 3 4 5] [--problems 1000] [--split eval|validation] [--out lengths.json]

For each length ``d`` the problems are ``d``-digit + ``d``-digit additions of one split:

* ``eval`` (default): the task's held-out split, seed ``EVAL_SEED`` - the test set, never used to choose
  anything (the same draws as every recipe's held-out evaluation of ``min_digits = max_digits = d``);
* ``validation``: fresh draws of the *training* split with seed :data:`VALIDATION_SEED`, for choosing
  hyper-parameters and checkpoints (no recipe draws training problems with this seed).

Short lengths have few distinct held-out problems (1 digit: 5 questions, 2 digits: ~400), so their
1000 draws repeat questions; 3+ digits are practically all distinct. Each model gets its accuracy and
standard error per length; every model after the first is compared with the first on the same
problems: the mean paired difference, its standard error, the 95% interval ``+-1.96 SE`` and the
exact McNemar p-value; ``--pool`` adds the comparison of the first model with the per-problem mean of
all the others (e.g. three seeds of one recipe: the seed-pooled paired interval). ``--out`` saves the per-problem correctness too (for pooling seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfgen.data.tasks import ArithmeticTask, prompt_text
from selfgen.eval.statistics import mcnemar, mean_difference, standard_error
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

VALIDATION_SEED = 20_000


def length_problems(digits: int, count: int, split: str):
    """``count`` ``digits``-digit additions of the held-out split (``eval``) or of the training split
    drawn with :data:`VALIDATION_SEED` (``validation``)."""
    if split not in ("eval", "validation"):
        raise ValueError(f"split must be 'eval' or 'validation', got {split!r}")
    task = ArithmeticTask("add", digits, digits)
    if split == "eval":
        return task, task.sample(count, EVAL_SEED, split="eval")
    return task, task.sample(count, VALIDATION_SEED, split="train")


def correctness(model_dir: str, digits: int, count: int, split: str, batch_size: int = 250) -> list[bool]:
    """Per-problem greedy correctness of the model in ``model_dir``."""
    model, tokenizer = load_policy(model_dir)
    task, problems = length_problems(digits, count, split)
    params = SamplingParams(temperature=0.0, max_new_tokens=16 + 12 * (digits + 1), batch_size=batch_size)
    rollouts = generate_rollouts(model, tokenizer, [prompt_text(p.question) for p in problems], params)
    return [task.verify(p, r.text) for p, r in zip(problems, rollouts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--lengths", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--split", default="eval", choices=("eval", "validation"))
    parser.add_argument("--pool", action="store_true", help="also compare the first model with the mean of the others")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, dict[str, list[bool]]] = {}
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
        results[model] = {str(d): correctness(model, d, args.problems, args.split) for d in args.lengths}
    first = args.models[0]
    print(f"split={args.split}, {args.problems} problems per length")
    for d in map(str, args.lengths):
        for model in args.models:
            items = results[model][d]
            line = f"{d} digits  {model:<48} acc {sum(items) / len(items):.3f} +- {standard_error(items):.3f}"
            if model != first:
                diff, se = mean_difference(results[first][d], items)
                p_value = mcnemar(items, results[first][d])["p_value"]
                line += f"  vs first {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}] McNemar p={p_value:.2g}"
            print(line, flush=True)
        if args.pool and len(args.models) > 2:
            pooled = np.mean([results[model][d] for model in args.models[1:]], axis=0)
            diff, se = mean_difference(results[first][d], pooled)
            print(f"{d} digits  mean of the {len(args.models) - 1} others vs first {diff:+.3f} "
                  f"[{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"split": args.split, "problems": args.problems, "correct": results}))


if __name__ == "__main__":
    main()
