"""SPC: does the critic find step errors better after self-play? Paired over held-out labelled solutions.

    OMP_NUM_THREADS=1 python benchmarks/spc_critic.py --models runs/spc-arith-llama/iteration-0/model
        runs/spc-arith-llama/pipeline [--verdict_sources written|comparison ...] [--problems 400] [--min_digits 3 --max_digits 4]
        [--split test|validation] [--critiques_dir runs/spc-critiques]

Every model's critic judges (greedy) every step of the same ``--problems`` held-out solutions of the
task's eval split (``--split test``, the default; ``--split validation``: solutions of fresh training-split
draws with ``VALIDATION_SEED`` of ``benchmarks/llm_lengths.py``, for choosing an iteration without reading
the test set) (:func:`~selfgen.data.reasoning.labelled_solutions`: half clean, half with one
rule-corrupted step of any of the three kinds); a model's verdict is its ``V:`` line or, with
``--verdict_sources comparison``, what its written comparison ``D:<step> vs <value>`` states. Printed per model: the step-level F1 (positive = a wrong
step, over the steps of clean solutions and the steps of erroneous ones up to their error), the
step true / false positive rates, the solution-level detection F1 and accuracy, ProcessBench's F1
(first error located / clean accepted), the accept rate, the recall per error kind (``critic_recall_<kind>``: erroneous
solutions of that kind flagged anywhere) and how often the critique's re-derived step is the
reference step (``derivation``, 0 for a verdict-only critic) and how often its verdict is the comparison of its own
derivation's result with the judged step's result (``consistency``, :func:`~selfgen.train.llm.spc.verdict_consistency`:
``V:Y`` iff they are equal), then the step F1 (TPR / FPR) the critic would have if its verdicts were that comparison
(``derivation-implied``), next to a step-blind critic that flags each
step at random at the model's own rate (TPR = FPR: what flagging more buys without judging); then each
model minus the first (the reference) with a 95% percentile bootstrap interval paired over problems (the same resampled problems for both models, 1000 resamples,
:func:`selfgen.eval.statistics.bootstrap_interval`), and each model's step F1 minus the step-blind critic's at the
model's own flag rate on the same resample (:func:`blind_step_f1`: expected precision = the share of wrong steps,
expected recall = the flag rate). ``--forced_probe N`` also prints each model's ``P(V:Y)`` with the right
re-derivation and comparison forced (:func:`forced_verdict`): whether its written verdict can follow the comparison at all;
``--carry_probe N`` how many of N held-out carry errors it finds and how many misses copy the judged step (:func:`carry_misses`).
``--critiques_dir DIR`` keeps each model's greedy critiques in a JSON file there (keyed by the model folder, split,
problem count and digits; :func:`cached_critiques`) and reads them back on a later call, so models can be
critiqued one at a time as they are trained and paired afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from selfgen.data.reasoning import (
    ERROR_KINDS, corrupt_step, critic_completion, critic_prompt, implied_verdict, labelled_solutions, parse_derivation,
)
from selfgen.eval.statistics import bootstrap_interval
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.spc import (
    SPCConfig, SPCTrainer, derivation_accuracy, detection_metrics, f1_score, first_flagged, harmonic_mean, step_labels,
    VERDICT_SOURCES, verdict_consistency,
)

sys.path.insert(0, str(Path(__file__).parent))
from llm_lengths import VALIDATION_SEED  # noqa: E402

SEED = EVAL_SEED + 700  # apart from the trainer's in-training detection set (EVAL_SEED + 500)
METRICS = (
    "step_f1", "step_tpr", "step_fpr", "critic_f1", "critic_accuracy", "critic_processbench_f1", "accept_rate",
    *(f"critic_recall_{kind}" for kind in ERROR_KINDS),
)


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


def blind_step_f1(solutions, verdicts) -> float:
    """The step F1 of flagging steps at random at the critic's own step flag rate, from the expected precision
    (the share of wrong steps) and recall (the flag rate): ``2 p r / (p + r)``."""
    truth, flagged = step_labels(solutions, verdicts)
    return harmonic_mean(sum(truth) / len(truth), sum(flagged) / len(flagged))


@torch.no_grad()
def forced_verdict(trainer: SPCTrainer, count: int, seed: int = SEED + 1) -> dict[str, float]:
    """Mean ``P(V:Y)`` (against ``V:N``) when the critique up to its verdict is forced to the rule-built one
    (the right re-derivation and comparison, ``D:<step> vs <judged result>\\nV:``): on a random step of
    ``count`` held-out solutions, unchanged (``clean``) and corrupted with each error kind. A critic whose
    verdict follows its written comparison gives ~1 on ``clean`` and ~0 on every kind."""
    rng, policy, tokenizer = random.Random(seed), trainer.policy.eval(), trainer.tokenizer
    yes, no = tokenizer.convert_tokens_to_ids("Y"), tokenizer.convert_tokens_to_ids("N")
    probabilities: dict[str, list[float]] = {kind: [] for kind in ("clean", *ERROR_KINDS)}
    for solution in labelled_solutions(trainer.task, count, seed, 0.0, split="eval"):
        k = rng.randrange(len(solution.steps))
        reference = solution.steps[k]
        for kind in probabilities:
            judged = reference if kind == "clean" else corrupt_step(reference, kind, rng)
            text = critic_prompt(solution.problem.question, solution.steps[:k], judged, trainer.format.prompt)
            text += critic_completion(reference, judged, "compare")[: -len("Y")]
            logits = policy(tokenizer(text, return_tensors="pt")["input_ids"]).logits[0, -1, [yes, no]]
            probabilities[kind].append(float(torch.softmax(logits, 0)[0]))
    return {kind: float(np.mean(values)) for kind, values in probabilities.items()}


def carry_misses(trainer: SPCTrainer, count: int) -> dict[str, int]:
    """On the wrong steps of the first ``count`` held-out solutions with a carry error: how many the critic
    finds (greedy critique), and of the rest how many re-derivations copy the judged (wrong) step."""
    wrong = [s for s in labelled_solutions(trainer.task, 10 * count, SEED, kinds=("carry",), split="eval") if s.error_index >= 0]
    wrong = wrong[:count]
    items = [(s.problem, s.steps[: s.error_index], s.steps[s.error_index]) for s in wrong]
    texts = [r.text for r in trainer.critique(items, 1, seed=0, greedy=True)]
    found = [trainer.verdict(text) is False for text in texts]
    copied = [parse_derivation(text) == item[2] for text, item in zip(texts, items)]
    return {"carry errors": len(wrong), "found": sum(found), "missed, judged step copied": sum(c and not f for c, f in zip(copied, found))}


def held_out_solutions(task, count: int, split: str):
    """The benchmark's labelled solutions: the task's eval split with :data:`SEED` (``test``) or fresh
    training-split draws with ``VALIDATION_SEED`` (``validation``)."""
    if split == "test":
        return labelled_solutions(task, count, SEED, split="eval")
    return labelled_solutions(task, count, VALIDATION_SEED, split="train")


def cached_critiques(trainer: SPCTrainer, solutions, path: Path | None) -> list[list[str]]:
    """The greedy critique of every step of ``solutions``, read from ``path`` when it holds them (written
    there otherwise; ``None``: no cache). A cached file must match the solutions' step counts."""
    if path is not None and path.is_file():
        critiques = json.loads(path.read_text())
        if [len(c) for c in critiques] != [len(s.steps) for s in solutions]:
            raise ValueError(f"{path}: cached critiques do not match the {len(solutions)} solutions' steps")
        return critiques
    critiques = trainer.step_critiques([s.problem for s in solutions], [s.steps for s in solutions])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(critiques))
    return critiques


def cache_path(directory: Path | None, model: str, args: argparse.Namespace) -> Path | None:
    if directory is None:
        return None
    key = str(Path(model).resolve()).strip("/").replace("/", "_")
    return directory / f"{key}-{args.split}-{args.problems}-{args.task}{args.min_digits}{args.max_digits}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--verdict_sources", nargs="+", default=["written"], choices=VERDICT_SOURCES,
                        help="per model (or one for all): its V: line, or what its written comparison states")
    parser.add_argument("--problems", type=int, default=400)
    parser.add_argument("--task", default="arith")
    parser.add_argument("--min_digits", type=int, default=3)
    parser.add_argument("--max_digits", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--critiques_dir", type=Path, default=None, help="cache of each model's critiques (JSON files)")
    parser.add_argument("--forced_probe", type=int, default=0, help="solutions for the forced-verdict probe (0: skip)")
    parser.add_argument("--carry_probe", type=int, default=0, help="held-out carry errors to critique (0: skip)")
    args = parser.parse_args()
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
    if len(args.verdict_sources) not in (1, len(args.models)):
        raise ValueError(f"--verdict_sources: give one, or one per model ({len(args.models)}), got {len(args.verdict_sources)}")
    sources = dict(zip(args.models, args.verdict_sources * len(args.models) if len(args.verdict_sources) == 1 else args.verdict_sources))
    verdicts, derivation, consistency, implied, forced, carry = {}, {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as output_dir:
        for model in args.models:
            config = SPCConfig(
                output_dir=output_dir, task=args.task, min_digits=args.min_digits, max_digits=args.max_digits,
                eval_problems=1, detection_problems=1, verdict_source=sources[model],
            )
            trainer = SPCTrainer(model=model, config=config)
            solutions = held_out_solutions(trainer.task, args.problems, args.split)
            critiques = cached_critiques(trainer, solutions, cache_path(args.critiques_dir, model, args))
            verdicts[model] = [[trainer.verdict(text) for text in texts] for texts in critiques]
            derivation[model] = derivation_accuracy(trainer.task, solutions, critiques)
            consistency[model] = verdict_consistency(solutions, critiques)
            if args.forced_probe:
                forced[model] = forced_verdict(trainer, args.forced_probe)
            if args.carry_probe:
                carry[model] = carry_misses(trainer, args.carry_probe)
            implied[model] = metrics(solutions, [
                [implied_verdict(text, step) for step, text in zip(s.steps, texts)] for s, texts in zip(solutions, critiques)
            ])
    print(f"{len(solutions)} {args.split} solutions ({sum(s.error_index >= 0 for s in solutions)} with an error), "
          f"{args.task} {args.min_digits}-{args.max_digits} digits")
    print("model | " + " | ".join(METRICS) + " | derivation | consistency")
    for model in args.models:
        values = metrics(solutions, verdicts[model])
        print(f"{model} ({sources[model]} verdicts) | " + " | ".join(f"{values[key]:.3f}" for key in METRICS) + f" | {derivation[model]:.3f} | {consistency[model]:.3f}")
        print(f"  derivation-implied verdicts: step F1 {implied[model]['step_f1']:.3f} "
              f"(TPR {implied[model]['step_tpr']:.3f} / FPR {implied[model]['step_fpr']:.3f})")
        if model in forced:
            print("  forced right derivation and comparison, P(V:Y): " + ", ".join(f"{k} {v:.3f}" for k, v in forced[model].items()))
        if model in carry:
            print("  " + ", ".join(f"{k} {v}" for k, v in carry[model].items()))
        blind = chance(solutions, verdicts[model])
        print("  step-blind critic at its flag rate | " + " | ".join(f"{blind[key]:.3f}" for key in METRICS))
    reference = args.models[0]
    rows = np.arange(len(solutions))
    resampled: dict[tuple[str, bytes], dict[str, float]] = {}  # every key's interval draws the same resamples (fixed seed)

    def resample_metrics(model: str, index: np.ndarray) -> dict[str, float]:
        key = (model, index.tobytes())
        if key not in resampled:
            resampled[key] = metrics([solutions[i] for i in index], [verdicts[model][i] for i in index])
        return resampled[key]

    for model in args.models[1:]:
        cells = []
        for key in METRICS:
            def difference(index: np.ndarray, key: str = key) -> float:
                return resample_metrics(model, index)[key] - resample_metrics(reference, index)[key]
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
