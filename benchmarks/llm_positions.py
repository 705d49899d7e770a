"""Does a model re-solve a problem as well deep in a context as from position 0? (SCoRe's turn 2, issue #18.)

    OMP_NUM_THREADS=1 python benchmarks/llm_positions.py --models assets/lm-arith-llama-v3 [more ...]
        [--digits 4] [--problems 200] [--split validation|eval] [--out positions.json]

For each ``a+b`` of ``--problems`` additions (:func:`llm_lengths.length_problems`) the model first answers
``a+b`` greedily (turn 1); then it solves the swapped question ``b+a`` greedily in three contexts:

* ``fresh`` - ``Q:b+a`` from position 0 (how well it solves the swapped question at all);
* ``other`` - after ANOTHER problem's prompt and turn 1 and the revision mark: ``Q:c+d`` + its attempt
  + ``R:`` + ``Q:b+a`` (the next problem of the list; the context length of turn 2, unrelated content);
* ``own`` - SCoRe's turn 2 of ``prompt_format: arith_swap`` exactly: ``Q:a+b`` + its own attempt + ``R:``
  + ``Q:b+a`` (:class:`~selfgen.train.llm.prompts.RestatedRevisionFormat`).

Per model: turn 1's greedy accuracy, and per context the greedy accuracy with its standard error, and ``own`` and ``other`` as a ratio of
``fresh``. A base that never computed past one example's length re-solves poorly in ``other``/``own``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfgen.data.reasoning import correction_prompt
from selfgen.data.tasks import prompt_text
from selfgen.eval.statistics import standard_error
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.prompts import RestatedRevisionFormat, swapped_question
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_lengths import length_problems  # noqa: E402

CONTEXTS = ("fresh", "other", "own")


def position_contexts(questions: list[str], attempts: list[str]) -> dict[str, list[str]]:
    """The three prompts of each question (module docstring); ``attempts[i]`` is question ``i``'s turn 1,
    ``other`` uses question ``i + 1``'s (cyclically)."""
    if len(questions) != len(attempts) or len(questions) < 2:
        raise ValueError(f"need >= 2 questions and one attempt each, got {len(questions)} and {len(attempts)}")
    swapped = [prompt_text(swapped_question(q)) for q in questions]
    shifted = [(questions[(i + 1) % len(questions)], attempts[(i + 1) % len(attempts)]) for i in range(len(questions))]
    swap_format = RestatedRevisionFormat("swap")
    return {
        "fresh": swapped,
        "other": [correction_prompt(prompt_text(q), a) + s for (q, a), s in zip(shifted, swapped)],
        "own": [swap_format.revision(q, a) for q, a in zip(questions, attempts)],
    }


def position_correctness(model_dir: str, digits: int, count: int, split: str) -> dict[str, list[bool]]:
    """Per-problem greedy correctness of the model in ``model_dir``: turn 1 (``turn1``) and each of :data:`CONTEXTS`."""
    model, tokenizer = load_policy(model_dir)
    task, problems = length_problems(digits, count, split)
    params = SamplingParams(temperature=0.0, max_new_tokens=16 + 12 * (digits + 1), batch_size=100)
    questions = [p.question for p in problems]
    attempts = [r.text for r in generate_rollouts(model, tokenizer, [prompt_text(q) for q in questions], params)]
    contexts = position_contexts(questions, attempts)
    solved = {
        name: [task.verify(p, r.text) for p, r in zip(problems, generate_rollouts(model, tokenizer, prompts, params))]
        for name, prompts in contexts.items()
    }
    return {"turn1": [task.verify(p, a) for p, a in zip(problems, attempts)], **solved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--split", default="validation", choices=("eval", "validation"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
        results[model] = position_correctness(model, args.digits, args.problems, args.split)
        rates = {name: sum(items) / len(items) for name, items in results[model].items()}
        cells = "  ".join(f"{name} {rates[name]:.3f} +- {standard_error(results[model][name]):.3f}" for name in ("turn1", *CONTEXTS))
        ratios = "  ".join(f"{name}/fresh {rates[name] / max(rates['fresh'], 1e-9):.2f}" for name in ("other", "own"))
        print(f"{model:<48} {cells}  {ratios}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"split": args.split, "digits": args.digits, "correct": results}))


if __name__ == "__main__":
    main()
