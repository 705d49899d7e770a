"""The ceiling of a fixed self-signal keep policy for a two-turn correction (SCoRe, issue #18), no training.

    OMP_NUM_THREADS=1 python benchmarks/llm_keep_signal.py --model assets/lm-arith-llama-v3
        [--digits 4] [--select_problems 400] [--eval_problems 400] [--test_problems 0] [--out keep.json]

The model answers every problem greedily (turn 1) and, separately, the swapped question ``b+a`` prompted
afresh (``fresh_swap`` of ``benchmarks/llm_turn2_formats.py``, the best fresh turn 2 measured there). The
policy: **keep turn 1 when the model's own mean token log-probability of it is >= a threshold, else answer
with the fresh re-solve** - SCoRe's keep-or-re-solve decision made by a fixed self-signal (the likelihood:
AUC 0.77 right vs wrong on v3 in the LaSeR gate) instead of a trained turn 2. A departure from SCoRe, which
trains turn 2; this only measures how much a policy the model could learn to imitate would give.

The threshold is chosen on the first ``--select_problems`` validation problems (training split,
``VALIDATION_SEED``; the first 400 are ``llm_turn2_formats.py``'s) to maximise Delta(t1,t2) among the
midpoints between observed log-probabilities (and keep-all / re-solve-all); the fixed policy is then read on
the next ``--eval_problems`` validation draws (disjoint) and, with ``--test_problems``, on the test split
(``EVAL_SEED``, the draws of ``llm_correction.py``). Reported per set: Acc@t1, Acc@t2 = the policy's
accuracy, Delta with its paired 95% interval, i->c, c->i, the share kept, the signal's AUC right vs wrong
first attempts, the policy minus "always re-solve" (paired: what the keep decision adds over the re-solve
alone), and the threshold-free rule "keep the more likely of the two attempts".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from selfgen.data.problems import Problem
from selfgen.data.tasks import ArithmeticTask
from selfgen.eval.scenes import ranking_auc
from selfgen.eval.statistics import mean_difference
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.score import SCoReConfig, SCoReTrainer, correction_metrics, mean_logprob

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_lengths import VALIDATION_SEED  # noqa: E402


def keep_policy(first: np.ndarray, resolve: np.ndarray, signal: np.ndarray, threshold: float) -> np.ndarray:
    """Turn 2's correctness: turn 1's where ``signal >= threshold`` (kept), else the re-solve's."""
    return np.where(signal >= threshold, first, resolve)


def choose_threshold(first: np.ndarray, resolve: np.ndarray, signal: np.ndarray) -> float:
    """The threshold maximising Delta = mean(turn 2) - mean(turn 1) on these problems, among ``-inf`` (keep
    every attempt), the midpoints between sorted distinct signals and ``+inf`` (re-solve every one); ties go
    to the lowest threshold (the policy that keeps the most)."""
    values = np.unique(signal[np.isfinite(signal)])
    candidates = [-np.inf, *((values[1:] + values[:-1]) / 2), np.inf]
    gains = [keep_policy(first, resolve, signal, t).mean() for t in candidates]
    return float(candidates[int(np.argmax(gains))])


def read(first: np.ndarray, resolve: np.ndarray, signal: np.ndarray, resolve_signal: np.ndarray, threshold: float) -> dict:
    """The fixed policy's correction metrics on one set, with Delta's paired 95% interval."""
    second = keep_policy(first, resolve, signal, threshold)
    likelier = np.where(signal >= resolve_signal, first, resolve)
    delta = paired_interval(first, second, "delta")
    return {
        **correction_metrics(first.tolist(), second.tolist()), "delta_low": delta["delta_low"], "delta_high": delta["delta_high"],
        "kept": float((signal >= threshold).mean()), "signal_auc": ranking_auc(signal, first),
        "resolve_accuracy": float(resolve.mean()), "oracle_keep": float((~first & resolve).mean()),
        **paired_interval(first, likelier, "likelier_delta", "likelier"),
        **paired_interval(resolve, second, "over_resolve"),
        "problems": len(first),
    }


def paired_interval(reference: np.ndarray, candidate: np.ndarray, key: str, bounds: str | None = None) -> dict:
    """``candidate - reference`` (paired per problem) as ``{key, <bounds>_low, <bounds>_high}``, a 95% interval."""
    diff, se = mean_difference(reference.astype(float).tolist(), candidate.astype(float).tolist())
    bounds = bounds or key
    return {key: diff, f"{bounds}_low": diff - 1.96 * se, f"{bounds}_high": diff + 1.96 * se}


def attempts(trainer: SCoReTrainer, problems: list[Problem]) -> dict[str, np.ndarray]:
    """Greedy turn 1 and greedy fresh swapped re-solve (:meth:`SCoReTrainer.keep_signal_attempts`):
    correctness and mean token log-probability of each."""
    first, resolve = trainer.keep_signal_attempts(problems)

    def read_out(rollouts: list) -> tuple[np.ndarray, np.ndarray]:
        right = np.array([trainer.verify(p, r.text) for p, r in zip(problems, rollouts)])
        return right, np.array([mean_logprob(r) for r in rollouts])

    (first, signal), (resolve, resolve_signal) = read_out(first), read_out(resolve)
    return {"first": first, "signal": signal, "resolve": resolve, "resolve_signal": resolve_signal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--select_problems", type=int, default=400)
    parser.add_argument("--eval_problems", type=int, default=400)
    parser.add_argument("--test_problems", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"--model: {args.model} is not a saved causal LM folder (no config.json)")
    task = ArithmeticTask("add", args.digits, args.digits)
    validation = task.sample(args.select_problems + args.eval_problems, VALIDATION_SEED)
    sets = {"select": validation[: args.select_problems], "eval": validation[args.select_problems :]}
    if args.test_problems:
        sets["test"] = task.sample(args.test_problems, EVAL_SEED, split="eval")
    with tempfile.TemporaryDirectory() as output_dir:
        config = SCoReConfig(output_dir=output_dir, task="arith", min_digits=args.digits, max_digits=args.digits, eval_problems=1)
        trainer = SCoReTrainer(model=args.model, config=config)
    results, threshold = {}, None
    for name, problems in sets.items():
        if not problems:
            continue
        data = attempts(trainer, problems)
        if threshold is None:
            threshold = choose_threshold(data["first"], data["resolve"], data["signal"])
        results[name] = read(data["first"], data["resolve"], data["signal"], data["resolve_signal"], threshold)
        r = results[name]
        print(f"{name} ({r['problems']} {args.digits}-digit): threshold {threshold:.4f} kept {r['kept']:.3f} "
              f"Acc@t1 {r['accuracy_t1']:.3f} re-solve {r['resolve_accuracy']:.3f} Acc@t2 {r['accuracy_t2']:.3f} "
              f"Delta {r['delta_t1_t2']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] i->c {r['delta_i_to_c']:.3f} "
              f"c->i {r['delta_c_to_i']:.3f} AUC {r['signal_auc']:.3f} oracle keep {r['oracle_keep']:.3f}; "
              f"likelier of the two: Delta {r['likelier_delta']:+.3f} [{r['likelier_low']:+.3f}, {r['likelier_high']:+.3f}]; "
              f"policy - always re-solve {r['over_resolve']:+.3f} [{r['over_resolve_low']:+.3f}, {r['over_resolve_high']:+.3f}]",
              flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "threshold": threshold, "results": results}, indent=1))


if __name__ == "__main__":
    main()
