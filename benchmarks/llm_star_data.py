"""What STaR's filter keeps, and what its SFT-on-ground-truth control gets instead.

    OMP_NUM_THREADS=1 python benchmarks/llm_star_data.py --model assets/lm-arith-llama-v3 [--digits 4]
        [--problems 256] [--temperatures 1.0 0.0] [--out star_data.json]

On ``--problems`` validation additions (training split, ``VALIDATION_SEED`` of ``benchmarks/llm_lengths.py``;
never the test split), for each decoding temperature (0 = greedy) it runs one STaR round's data step
(:class:`~selfgen.train.llm.star.STaRTrainer`: one rationale per problem, then one hinted retry,
``H:<answer>``, for each failure) and prints

* ``solved`` - the share of problems whose unhinted rationale is right (STaR's kept examples);
* ``rationalized`` - the share of problems whose hinted retry is right (added to the kept examples);
* ``equal_reference_solved`` / ``equal_reference_rationalized`` - of the kept unhinted / hinted rationales, the
  share identical to the reference worked solution (``task.worked_solution``: column addition has one
  canonical solution, so a right rationale that equals it makes a STaR example indistinguishable from a
  control example on the same problem; a hinted one that differs reached the hint's answer through wrong steps);
* ``greedy_on_kept`` / ``greedy_on_control`` - the model's greedy accuracy on the problems STaR keeps and on
  the first as many problems of the same draw (what the control trains on): how much of each set the model
  already solves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfgen.data.tasks import ArithmeticTask, prompt_text
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

from llm_lengths import VALIDATION_SEED


def texts(model, tokenizer, prompts: list[str], temperature: float, seed: int) -> list[str]:
    """One completion per prompt (greedy at ``temperature`` 0), seeded."""
    params = SamplingParams(temperature=temperature, max_new_tokens=64, batch_size=256)
    return [r.text for r in generate_rollouts(model, tokenizer, prompts, params, seed=seed)]


def equal_reference(task: ArithmeticTask, problems: list, rationales: dict[int, str]) -> float:
    """The share of ``rationales`` (problem index -> text) identical to their problem's reference worked solution."""
    return sum(t == task.worked_solution(problems[i]) for i, t in rationales.items()) / max(len(rationales), 1)


def star_data(model_dir: str, digits: int, count: int, temperature: float, seed: int = 1) -> dict[str, float]:
    """STaR's data step at ``temperature`` on ``count`` validation problems, with the control's set beside it."""
    model, tokenizer = load_policy(model_dir)
    task = ArithmeticTask("add", digits, digits)
    problems = task.sample(count, VALIDATION_SEED, split="train")
    first = texts(model, tokenizer, [prompt_text(p.question) for p in problems], temperature, seed)
    greedy = texts(model, tokenizer, [prompt_text(p.question) for p in problems], 0.0, seed)
    kept = {i: t for i, (p, t) in enumerate(zip(problems, first)) if task.verify(p, t)}
    failed = [i for i in range(count) if i not in kept]
    hinted = texts(model, tokenizer, [prompt_text(problems[i].question, hint=problems[i].answer) for i in failed], temperature, seed)
    rationalized = {i: t for i, t in zip(failed, hinted) if task.verify(problems[i], t)}
    examples = {**kept, **rationalized}
    control = range(len(examples))
    return {
        "temperature": temperature,
        "solved": len(kept) / count,
        "rationalized": len(rationalized) / count,
        "equal_reference_solved": equal_reference(task, problems, kept),
        "equal_reference_rationalized": equal_reference(task, problems, rationalized),
        "greedy_on_kept": sum(task.verify(problems[i], greedy[i]) for i in examples) / max(len(examples), 1),
        "greedy_on_control": sum(task.verify(problems[i], greedy[i]) for i in control) / max(len(control), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 0.0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [star_data(args.model, args.digits, args.problems, t) for t in args.temperatures]
    for row in rows:
        print("  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
