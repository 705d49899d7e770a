"""Where a two-turn revision goes wrong, column by column: does turn 2 read the operands it was given?

    OMP_NUM_THREADS=1 python benchmarks/llm_revision_columns.py --models runs/score-arith-llama/iteration-0/model \\
        runs/score-arith-llama/pipeline [--digits 4] [--problems 300] [--prompt_format arith] [--out columns.json]

Each model answers ``--problems`` validation additions (training split, ``VALIDATION_SEED`` of
``benchmarks/llm_lengths.py``; never the test split) greedily, then revises once (``R:``, or the turn-2 context of ``--prompt_format``; the shared
revision sampler, as ``benchmarks/llm_correction.py``). Every column step ``a+b+c=s`` of each turn's
``S:`` line is checked against the question (zero-padded operands, units first):

* ``operand`` - ``a`` or ``b`` is not the question's digit of that column; of these, ``shifted`` - the
  digit read is the same operand's digit one column over (a positional read error), and ``from_attempt``
  (turn 2 only) - the step equals the first attempt's step of the same column although that one was
  wrong or the question disagrees (a copied error);
* ``carry`` - the carry is not the previous column's; ``sum`` - ``a+b+c != s``; ``steps`` - the line has
  the wrong number of columns.

Printed per model and turn: accuracy, the share of turns with each error (a turn can have several), the
number of misread operand steps per column (units first: the hundreds column is the third),
and for turn 2 the same restricted to the episodes whose first attempt was right (the ``c->i`` breaks),
the share of turn-2 contexts longer than the pretraining context (``--context``, ``max_length`` of
``configs/lm_arith_llama.yaml``) and the share of turn 2 that copies turn 1 verbatim.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from selfgen.data.tasks import ArithmeticTask, STEP_PATTERN, solution_steps
from selfgen.train.llm.prompts import PROMPT_FORMATS
from selfgen.train.llm.score import SCoReConfig, SCoReTrainer

from llm_lengths import VALIDATION_SEED

ERRORS = ("operand", "shifted", "from_attempt", "carry", "sum", "steps")


def column_errors(question: str, completion: str, attempt: str | None = None) -> dict[str, bool | list[int]]:
    """Which kinds of column error the ``S:`` line of ``completion`` makes on the addition ``question``
    (see the module docstring); ``attempt``: the first attempt, for ``from_attempt``. ``columns``: the
    columns (1 = units) whose step misreads an operand digit."""
    left, right = question.split("+")
    width = max(len(left), len(right))
    left, right = left.zfill(width)[::-1], right.zfill(width)[::-1]
    steps, earlier = solution_steps(completion), solution_steps(attempt) if attempt is not None else []
    found: dict[str, bool | list[int]] = {**dict.fromkeys(ERRORS, False), "columns": []}
    found["steps"] = len(steps) != width
    carry = 0
    for column, step in enumerate(steps[:width]):
        match = STEP_PATTERN.match(step.strip())
        if match is None:
            found["sum"] = True
            continue
        a, _, b, c, s = match.groups()
        c, s = int(c or 0), int(s)
        if (a, b) != (left[column], right[column]):
            found["operand"] = True
            found["columns"].append(column + 1)
            near = {left[k] for k in (column - 1, column + 1) if 0 <= k < width}, {right[k] for k in (column - 1, column + 1) if 0 <= k < width}
            found["shifted"] |= (a != left[column] and a in near[0]) or (b != right[column] and b in near[1])
            if column < len(earlier) and earlier[column].strip() == step.strip():
                found["from_attempt"] = True
        found["carry"] |= c != carry
        found["sum"] |= int(a) + int(b) + c != s
        carry = s // 10
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--prompt_format", default="arith", choices=PROMPT_FORMATS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    problems = ArithmeticTask("add", args.digits, args.digits).sample(args.problems, VALIDATION_SEED)
    results = {}
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
        with tempfile.TemporaryDirectory() as output_dir:
            config = SCoReConfig(output_dir=output_dir, task="arith", min_digits=args.digits, max_digits=args.digits, eval_problems=1,
                                 prompt_format=args.prompt_format)
            trainer = SCoReTrainer(model=model, config=config)
            episodes = trainer.revisions(problems, rounds=2, temperature=0.0, num_samples=1)
        rows = []
        for episode in episodes:
            first, second = episode.turns[0].rollout, episode.turns[1].rollout
            rows.append({
                "correct": [bool(ok) for ok in episode.correct],
                "t1": column_errors(episode.problem.question, first.text),
                "t2": column_errors(episode.problem.question, second.text, first.text),
                "context": len(second.prompt_ids) + len(second.completion_ids),
                "copy": second.text.strip() == first.text.strip(),
                "texts": episode.texts,
            })
        results[model] = rows
        right_first = [r for r in rows if r["correct"][0]]
        print(f"{model}: {len(rows)} validation {args.digits}-digit additions, greedy")
        for turn, subset, label in (("t1", rows, "turn 1"), ("t2", rows, "turn 2"), ("t2", right_first, "turn 2 | turn 1 right")):
            index = 0 if turn == "t1" else 1
            accuracy = np.mean([r["correct"][index] for r in subset]) if subset else float("nan")
            shares = "  ".join(f"{k} {np.mean([r[turn][k] for r in subset]):.3f}" for k in ERRORS) if subset else ""
            print(f"  {label:<22} n {len(subset):4d}  acc {accuracy:.3f}  {shares}")
            misread = np.bincount([c for r in subset for c in r[turn]["columns"]], minlength=args.digits + 1)[1:]
            print(f"  {'':<22} misread steps by column (units first): {misread.tolist()}")
        print(f"  turn-2 context > {args.context} tokens: {np.mean([r['context'] > args.context for r in rows]):.3f}"
              f" (max {max(r['context'] for r in rows)});  turn 2 copies turn 1: {np.mean([r['copy'] for r in rows]):.3f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
