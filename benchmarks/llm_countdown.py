"""Greedy (and sampled pass@k) accuracy on every held-out Countdown question, and paired comparisons.

    OMP_NUM_THREADS=1 python benchmarks/llm_countdown.py --models start=assets/lm-countdown-llama \\
        bstar0=runs/bstar-countdown-llama-s0/pipeline ... [--compare bstar0,bstar1,bstar2:star0,star1,star2 ...]
        [--numbers 3] [--max_number 9] [--samples 8 --temperature 1.0] [--split eval|validation] [--out cd.json]

The problems are all distinct questions of ``--count`` draws (default 20000, which reach every one of
the 3-number held-out split's 991 questions) of the Countdown task's held-out split (``eval``, seed
``EVAL_SEED``: the test set, never used to choose anything) or of its training split drawn with seed
``VALIDATION_SEED`` (``validation``, for choices). The 991 held-out questions are orderings of only 203
puzzles (numbers and target; a puzzle's orderings share a split), so every standard error here is
clustered by puzzle (the per-question differences summed within a puzzle), not by question.

Each model: greedy accuracy +- clustered SE, and with ``--samples k`` also the mean accuracy of ``k``
samples at ``--temperature`` (pass@1) and pass@k. ``--compare A,B,..:C,D,..`` prints the paired
difference of the per-question mean of models ``A,B,..`` (e.g. three seeds of one recipe) minus that of
``C,D,..``, with its clustered 95% interval. ``--out`` saves the per-question greedy correctness.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfgen.data.tasks import CountdownTask, prompt_text
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

from llm_lengths import VALIDATION_SEED  # the validation draws' seed, shared with the addition benchmark


def clustered_mean(values: np.ndarray, clusters: list[str]) -> tuple[float, float]:
    """The mean of ``values`` and its cluster-robust standard error: with ``K`` clusters and ``N`` values,
    ``SE = sqrt(K / (K - 1) * sum_k (sum_{i in k} (v_i - mean))^2) / N``."""
    values = np.asarray(values, dtype=float)
    if len(values) != len(clusters) or len(set(clusters)) < 2:
        raise ValueError(f"clustered_mean needs one cluster per value and >= 2 clusters, got {len(values)} values, {len(set(clusters))} clusters")
    mean, sums = values.mean(), {}
    for value, cluster in zip(values, clusters):
        sums[cluster] = sums.get(cluster, 0.0) + value - mean
    k = len(sums)
    return float(mean), float(np.sqrt(k / (k - 1) * sum(s * s for s in sums.values())) / len(values))


def countdown_questions(task: CountdownTask, split: str, count: int):
    """The distinct questions of ``count`` draws of ``split`` (``eval`` or ``validation``), in draw order."""
    if split not in ("eval", "validation"):
        raise ValueError(f"split must be 'eval' or 'validation', got {split!r}")
    draws = task.sample(count, EVAL_SEED, "eval") if split == "eval" else task.sample(count, VALIDATION_SEED, "train")
    return list({p.question: p for p in draws}.values())


def correctness(model_dir: str, task: CountdownTask, problems, samples: int, temperature: float) -> dict[str, list]:
    """Per-question greedy correctness and, with ``samples``, the share of ``samples`` correct samples."""
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--models: {model_dir} is not a saved causal LM folder (no config.json)")
    model, tokenizer = load_policy(model_dir)
    prompts = [prompt_text(p.question) for p in problems]
    greedy = generate_rollouts(model, tokenizer, prompts, SamplingParams(temperature=0.0, batch_size=500))
    result = {"greedy": [task.verify(p, r.text) for p, r in zip(problems, greedy)]}
    if samples:
        params = SamplingParams(temperature=temperature, num_samples=samples, batch_size=512)
        rollouts = generate_rollouts(model, tokenizer, prompts, params, seed=1)
        ok = [task.verify(p, rollouts[i * samples + j].text) for i, p in enumerate(problems) for j in range(samples)]
        result["sampled"] = [sum(ok[i * samples : (i + 1) * samples]) / samples for i in range(len(problems))]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="name=folder pairs")
    parser.add_argument("--compare", nargs="*", default=[], help="A,B:C,D - mean of A,B minus mean of C,D")
    parser.add_argument("--numbers", type=int, default=3)
    parser.add_argument("--max_number", type=int, default=9)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--split", default="eval", choices=("eval", "validation"))
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if any("=" not in item for item in args.models):
        raise ValueError(f"--models expects name=folder pairs, got {args.models}")
    task = CountdownTask(num_numbers=args.numbers, max_number=args.max_number)
    problems = countdown_questions(task, args.split, args.count)
    puzzles = [task.split_key(p.question) for p in problems]
    print(f"split={args.split}: {len(problems)} distinct questions, {len(set(puzzles))} puzzles", flush=True)
    results = {}
    for item in args.models:
        name, folder = item.split("=", 1)
        results[name] = correctness(folder, task, problems, args.samples, args.temperature)
        acc, se = clustered_mean(results[name]["greedy"], puzzles)
        line = f"{name:<12} greedy {acc:.3f} +- {se:.3f}"
        if args.samples:
            sampled = results[name]["sampled"]
            line += (f"  T={args.temperature} pass@1 {np.mean(sampled):.3f}  pass@{args.samples} "
                     f"{np.mean([s > 0 for s in sampled]):.3f}")
        print(line, flush=True)
    for spec in args.compare:
        left, right = (part.split(",") for part in spec.split(":"))
        mean_of = lambda names: np.mean([results[n]["greedy"] for n in names], axis=0)  # noqa: E731
        diff, se = clustered_mean(mean_of(left) - mean_of(right), puzzles)
        print(f"{spec:<40} {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"split": args.split, "questions": [p.question for p in problems], "puzzles": puzzles, "correct": results}
        args.out.write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
