"""Where does a label-free vote carry information? Majority vote vs one sample, and Co-Reward's
pseudo-labels, by addition length, on *training-split* problems (never the test split).

    OMP_NUM_THREADS=1 python benchmarks/llm_label_signal.py --model assets/lm-arith-llama \\
        [--lengths 3 4 3-4] [--problems 200] [--samples 8] [--split train|validation] [--out signal.json]

``--split train`` (default) draws the questions with :data:`SIGNAL_SEED`; ``validation`` with
``VALIDATION_SEED`` of ``benchmarks/llm_lengths.py`` (the problems its ``--split validation`` scores; also
training-split questions, so the test split is never read).

For each length spec (``d``: d-digit + d-digit; ``lo-hi``: each operand's length uniform in lo..hi, the
task's own mixing) ``--problems`` training-split questions (seed :data:`SIGNAL_SEED`) and one exact
rephrasing of each get ``--samples`` rollouts at ``--temperature`` (default 1, what a GRPO-family iteration
samples). Several ``--samples`` and ``--temperature`` values make a grid: per temperature one draw of
``max(samples)`` rollouts, every k voting over its first k (nested groups), one greedy decode shared by all cells:

    python benchmarks/llm_label_signal.py --model assets/lm-arith-llama-v3 --lengths 4 --split validation \
        --samples 8 16 32 --temperature 0.5 0.7 --out grid.json   # cells "4 T=0.5 k=8", ...
:func:`selfgen.train.llm.co_reward.label_signal` turns the answers into pass@1, maj@k (TTRL's self-vote),
Co-Reward's pseudo-label accuracy, reward agreement with the verifier, and the *alignment* of the
label-free advantages with the verifier's (1 = GRPO's signal, 0 = none, < 0 = rewards wrong answers),
each with a 95% bootstrap interval over questions; also the greedy accuracy on the originals and
``majority_minus_greedy`` (paired): the most that sharpening the sampler towards its own vote can add to
greedy decoding, the ceiling of a vote-based label-free reward. Label-free RL can help only where maj@k > pass@1
and the alignment is clearly positive; this chooses the training distribution before any training run.

``--collective MODEL [MODEL ...]`` measures RLCCF's collective instead (the same questions, no rephrasing):
each member samples its group (member ``k`` with seed ``--collective_seeds[k]``, default ``SIGNAL_SEED + k``;
give copies of one model different seeds), and :func:`selfgen.train.llm.rlccf.collective_signal` reports
how often the self-consistency-weighted vote is right and each member's alignment - which members to
choose before an RLCCF run:

    python benchmarks/llm_label_signal.py --lengths 4 --collective assets/lm-arith-llama assets/lm-arith \
        --collective_seeds 30000 30000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from selfgen.data.tasks import ArithmeticTask, prompt_text
from selfgen.eval.statistics import bootstrap_interval
from selfgen.train.llm.co_reward import label_signal
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.rlccf import collective_signal
from selfgen.train.llm.rewards import answer_key, canonical_answer, majority_answer
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_lengths import VALIDATION_SEED  # noqa: E402

SIGNAL_SEED = 30_000  # training split; no recipe draws its training problems with this seed


def parse_lengths(spec: str) -> tuple[int, int]:
    """``"4"`` -> (4, 4); ``"3-4"`` -> (3, 4)."""
    try:
        low, _, high = spec.partition("-")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"--lengths: expected 'd' or 'lo-hi' (e.g. 4 or 3-4), got {spec!r}") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise ValueError(f"--lengths: need 1 <= lo <= hi, got {spec!r}")
    return bounds


def split_questions(task: ArithmeticTask, problems: int, split: str):
    """``problems`` training-split questions drawn with :data:`SIGNAL_SEED` (``train``) or ``VALIDATION_SEED``."""
    if split not in ("train", "validation"):
        raise ValueError(f"--split: expected 'train' or 'validation', got {split!r}")
    return task.sample(problems, SIGNAL_SEED if split == "train" else VALIDATION_SEED, split="train")


def answer_groups(model, tokenizer, questions: list[str], samples: int, seed: int,
                  temperature: float = 1.0) -> list[list[str | None]]:
    """``samples`` answer keys per question at ``temperature`` (0: one greedy answer)."""
    params = SamplingParams(temperature=temperature, num_samples=samples, max_new_tokens=64, batch_size=256)
    rollouts = generate_rollouts(model, tokenizer, [prompt_text(q) for q in questions], params, seed=seed)
    keys = [answer_key(r.text) for r in rollouts]
    return [keys[i * samples : (i + 1) * samples] for i in range(len(questions))]


def summarise(ours: list[list[str | None]], theirs: list[list[str | None]], truths: list[str],
              greedy: np.ndarray) -> dict:
    """:func:`label_signal` with bootstrap intervals over questions, plus ``majority_minus_greedy`` (paired)."""
    result = {"point": label_signal(ours, theirs, truths)}
    index = np.arange(len(truths))[:, None]
    for key in result["point"]:
        stat = lambda rows, key=key: label_signal([ours[i] for i in rows[:, 0]], [theirs[i] for i in rows[:, 0]],
                                                 [truths[i] for i in rows[:, 0]])[key]
        result.setdefault("interval", {})[key] = bootstrap_interval(stat, index, num_resamples=200)
    result["majority_minus_pass"] = result["point"]["majority_at_k"] - result["point"]["pass_at_1"]
    majority = np.array([majority_answer(g) is not None and majority_answer(g) == t for g, t in zip(ours, truths)],
                        dtype=float)
    result["greedy"] = float(greedy.mean())
    gap = lambda rows: float(np.mean(majority[rows[:, 0]] - greedy[rows[:, 0]]))
    result["majority_minus_greedy"] = [gap(index), *bootstrap_interval(gap, index, num_resamples=200)]
    return result


def measure(model_dir: str, spec: str, problems: int, samples: list[int], split: str = "train",
            temperatures: list[float] = (1.0,)) -> dict[tuple[float, int], dict]:
    """One result per (temperature, k): each temperature samples ``max(samples)`` rollouts per question once and
    every k in ``samples`` votes over the first k of them (so the k's share their draws, as nested groups)."""
    model, tokenizer = load_policy(model_dir)
    task = ArithmeticTask("add", *parse_lengths(spec))
    originals = split_questions(task, problems, split)
    rephrased = task.rephrasings(originals, SIGNAL_SEED)
    truths = [canonical_answer(p.answer) for p in originals]
    greedy_keys = answer_groups(model, tokenizer, [p.question for p in originals], 1, SIGNAL_SEED, temperature=0.0)
    greedy = np.array([keys[0] is not None and keys[0] == t for keys, t in zip(greedy_keys, truths)], dtype=float)
    results = {}
    for temperature in temperatures:
        draw = lambda items, seed: answer_groups(model, tokenizer, [p.question for p in items], max(samples), seed,
                                                 temperature)
        ours, theirs = draw(originals, SIGNAL_SEED), draw(rephrased, SIGNAL_SEED + 1)
        for k in samples:
            results[temperature, k] = summarise([g[:k] for g in ours], [g[:k] for g in theirs], truths, greedy)
    return results


def measure_collective(models: list[str], seeds: list[int], spec: str, problems: int, samples: int,
                       split: str = "train") -> dict:
    questions = split_questions(ArithmeticTask("add", *parse_lengths(spec)), problems, split)
    truths = [canonical_answer(p.answer) for p in questions]
    groups = []
    for model_dir, seed in zip(models, seeds):
        model, tokenizer = load_policy(model_dir)
        groups.append(answer_groups(model, tokenizer, [p.question for p in questions], samples, seed))
    result = {"point": collective_signal(groups, truths)}
    index = np.arange(problems)[:, None]
    for key in result["point"]:
        stat = lambda rows, key=key: collective_signal([[g[i] for i in rows[:, 0]] for g in groups],
                                                       [truths[i] for i in rows[:, 0]])[key]
        result.setdefault("interval", {})[key] = bootstrap_interval(stat, index, num_resamples=200)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/lm-arith-llama")
    parser.add_argument("--lengths", nargs="+", default=["3", "4", "3-4"])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--samples", type=int, nargs="+", default=[8],
                        help="group sizes k; several values vote over nested prefixes of one draw of max(k)")
    parser.add_argument("--split", default="train", choices=("train", "validation"))
    parser.add_argument("--temperature", type=float, nargs="+", default=[1.0],
                        help="rollout temperature(s) of the groups (> 0)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--collective", nargs="+", default=None, help="RLCCF members (model folders), member 0 first")
    parser.add_argument("--collective_seeds", nargs="+", type=int, default=None)
    args = parser.parse_args()
    if min(args.temperature) <= 0:
        raise ValueError(f"--temperature must be > 0 (the groups are sampled), got {args.temperature}")
    if min(args.samples) < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.collective and (args.temperature != [1.0] or len(args.samples) != 1):
        raise ValueError("--temperature and several --samples apply to --model only; --collective samples one k at T=1")
    for model in args.collective or [args.model]:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--model/--collective: {model} is not a saved causal LM folder (no config.json)")
    results = {}
    if args.collective:
        seeds = args.collective_seeds or [SIGNAL_SEED + k for k in range(len(args.collective))]
        if len(seeds) != len(args.collective):
            raise ValueError(f"--collective_seeds: need one seed per member ({len(args.collective)}), got {seeds}")
        print(f"collective {args.collective} (seeds {seeds}): {args.problems} {args.split} questions x {args.samples[0]} samples at T=1")
        for spec in args.lengths:
            results[spec] = measure_collective(args.collective, seeds, spec, args.problems, args.samples[0], args.split)
            report(spec, results[spec], args.out, results)
        return
    print(f"{args.model}: {args.problems} {args.split} questions x {args.samples} samples at T={args.temperature}")
    single = len(args.samples) == 1 and len(args.temperature) == 1
    for spec in args.lengths:
        for (temperature, k), result in measure(args.model, spec, args.problems, sorted(set(args.samples)),
                                                args.split, args.temperature).items():
            name = spec if single else f"{spec} T={temperature:g} k={k}"
            results[name] = result
            report(name, result, args.out, results)


def report(name: str, result: dict, out: Path | None, results: dict) -> None:
    """Print one cell and rewrite ``out`` with every cell so far."""
    point, interval = result["point"], result["interval"]
    cells = "  ".join(f"{k} {v:.3f} [{interval[k][0]:.3f}, {interval[k][1]:.3f}]" for k, v in point.items())
    print(f"digits {name:<4} {cells}", flush=True)
    if "greedy" in result:
        gap = result["majority_minus_greedy"]
        print(f"digits {name:<4} greedy {result['greedy']:.3f}  majority_at_k - greedy {gap[0]:+.3f} [{gap[1]:+.3f}, {gap[2]:+.3f}]", flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
