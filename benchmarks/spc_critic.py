"""SPC: does the critic find step errors better after self-play? Paired over held-out labelled solutions.

    OMP_NUM_THREADS=1 python benchmarks/spc_critic.py --models runs/spc-arith-llama/iteration-0/model
        runs/spc-arith-llama/pipeline [--problems 400] [--min_digits 3 --max_digits 4]

Every model's critic judges (greedy) every step of the same ``--problems`` held-out solutions of the
task's eval split (:func:`~selfgen.data.reasoning.labelled_solutions`: half clean, half with one
rule-corrupted step of any of the three kinds). Printed per model: the step-level F1 (positive = a wrong
step, over the steps of clean solutions and the steps of erroneous ones up to their error), the
step true / false positive rates, the solution-level detection F1 and accuracy, ProcessBench's F1
(first error located / clean accepted), the accept rate and how often the critique's re-derived step is the
reference step (``derivation``, 0 for a verdict-only critic) and how often its verdict is the comparison of its own
derivation with the judged step (``consistency``: ``V:Y`` iff they are equal), then the step F1 (TPR / FPR) the
critic would have if its verdicts were that comparison (``derivation-implied``), next to a step-blind critic that flags each
step at random at the model's own rate (TPR = FPR: what flagging more buys without judging); then each
model minus the first (the reference) with a 95% percentile bootstrap interval paired over problems (the same resampled problems for both models, 1000 resamples,
:func:`selfgen.eval.statistics.bootstrap_interval`), and each model's step F1 minus the step-blind critic's at the
model's own flag rate on the same resample (:func:`blind_step_f1`: expected precision = the share of wrong steps,
expected recall = the flag rate).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from selfgen.data.reasoning import labelled_solutions, parse_derivation
from selfgen.eval.statistics import bootstrap_interval
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.data.tasks import parse_verdict
from selfgen.train.llm.spc import (
    SPCConfig, SPCTrainer, derivation_accuracy, detection_metrics, f1_score, first_flagged, harmonic_mean, step_labels,
)

SEED = EVAL_SEED + 700  # apart from the trainer's in-training detection set (EVAL_SEED + 500)
METRICS = ("step_f1", "step_tpr", "step_fpr", "critic_f1", "critic_accuracy", "critic_processbench_f1", "accept_rate")


def metrics(solutions, verdicts) -> dict[str, float]:
    truth, flagged = step_labels(solutions, verdicts)
    first = [first_flagged(v) for v in verdicts]
    return {
        "step_f1": f1_score(truth, flagged),
        "step_tpr": sum(t and f for t, f in zip(truth, flagged)) / max(sum(truth), 1),
        "step_fpr": sum(f and not t for t, f in zip(truth, flagged)) / max(len(truth) - sum(truth), 1),
        **detection_metrics(solutions, first),
        "accept_rate": sum(f == -1 for f in first) / len(first),
    }


def chance(solutions, verdicts, draws: int = 200, seed: int = 0) -> dict[str, float]:
    """The metrics of a step-blind critic: each step flagged at random with the model's own step flag rate (mean over ``draws`` draws): what flagging more buys without judging."""
    truth, flagged = step_labels(solutions, verdicts)
    rate = sum(flagged) / len(flagged)
    rng = np.random.default_rng(seed)
    runs = [
        metrics(solutions, [[None if rng.random() < rate else True for _ in steps] for steps in verdicts])
        for _ in range(draws)
    ]
    return {key: float(np.mean([run[key] for run in runs])) for key in METRICS}


def verdict_consistency(solutions, critiques) -> float:
    """How often a critique's verdict says what comparing its own re-derived step with the judged step says
    (``V:Y`` iff equal), over the steps :func:`step_labels` scores."""
    hits = []
    for solution, texts in zip(solutions, critiques):
        last = solution.error_index if solution.error_index >= 0 else len(texts) - 1
        hits += [parse_verdict(text) is (parse_derivation(text) == step) for step, text in zip(solution.steps, texts[: last + 1])]
    return sum(hits) / max(len(hits), 1)


def blind_step_f1(solutions, verdicts) -> float:
    """The step F1 of flagging steps at random at the critic's own step flag rate, from the expected precision
    (the share of wrong steps) and recall (the flag rate): ``2 p r / (p + r)``."""
    truth, flagged = step_labels(solutions, verdicts)
    return harmonic_mean(sum(truth) / len(truth), sum(flagged) / len(flagged))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--problems", type=int, default=400)
    parser.add_argument("--task", default="arith")
    parser.add_argument("--min_digits", type=int, default=3)
    parser.add_argument("--max_digits", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
    verdicts, derivation, consistency, implied = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as output_dir:
        for model in args.models:
            config = SPCConfig(
                output_dir=output_dir, task=args.task, min_digits=args.min_digits, max_digits=args.max_digits,
                eval_problems=1, detection_problems=1,
            )
            trainer = SPCTrainer(model=model, config=config)
            solutions = labelled_solutions(trainer.task, args.problems, SEED, split="eval")
            critiques = trainer.step_critiques([s.problem for s in solutions], [s.steps for s in solutions])
            verdicts[model] = [[parse_verdict(text) for text in texts] for texts in critiques]
            derivation[model] = derivation_accuracy(trainer.task, solutions, critiques)
            consistency[model] = verdict_consistency(solutions, critiques)
            implied[model] = metrics(solutions, [
                [parse_derivation(text) == step for step, text in zip(s.steps, texts)] for s, texts in zip(solutions, critiques)
            ])
    print(f"{len(solutions)} held-out solutions ({sum(s.error_index >= 0 for s in solutions)} with an error), "
          f"{args.task} {args.min_digits}-{args.max_digits} digits")
    print("model | " + " | ".join(METRICS) + " | derivation | consistency")
    for model in args.models:
        values = metrics(solutions, verdicts[model])
        print(f"{model} | " + " | ".join(f"{values[key]:.3f}" for key in METRICS) + f" | {derivation[model]:.3f} | {consistency[model]:.3f}")
        print(f"  derivation-implied verdicts: step F1 {implied[model]['step_f1']:.3f} "
              f"(TPR {implied[model]['step_tpr']:.3f} / FPR {implied[model]['step_fpr']:.3f})")
        blind = chance(solutions, verdicts[model])
        print("  step-blind critic at its flag rate | " + " | ".join(f"{blind[key]:.3f}" for key in METRICS))
    reference = args.models[0]
    rows = np.arange(len(solutions))
    for model in args.models[1:]:
        cells = []
        for key in METRICS:
            def difference(index: np.ndarray, key: str = key) -> float:
                picked = [solutions[i] for i in index]
                return (metrics(picked, [verdicts[model][i] for i in index])[key]
                        - metrics(picked, [verdicts[reference][i] for i in index])[key])
            low, high = bootstrap_interval(difference, rows, num_resamples=args.resamples)
            cells.append(f"{key} {difference(rows):+.3f} [{low:+.3f}, {high:+.3f}]")
        print(f"{model} - {reference}: " + "; ".join(cells), flush=True)
    for model in args.models:
        def over_blind(index: np.ndarray, model: str = model) -> float:
            picked, judged = [solutions[i] for i in index], [verdicts[model][i] for i in index]
            return metrics(picked, judged)["step_f1"] - blind_step_f1(picked, judged)
        low, high = bootstrap_interval(over_blind, rows, num_resamples=args.resamples)
        print(f"{model} - step-blind critic at its flag rate: step_f1 {over_blind(rows):+.3f} [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
