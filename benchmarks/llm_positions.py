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

``--packed_rows R`` also reads the pretraining stream as packed pretraining sees it (``pack_length`` of
``selfgen train lm``): ``R`` rows packed as ``configs/lm_arith_llama_v4_packed.yaml`` packs them (v3's last-stage
data mix, 256 tokens; training split, seed ``VALIDATION_SEED``), and per example index in its row the share of examples whose completion the model
predicts exactly, teacher-forced (argmax at every completion token). Index 0 starts at position 0.

``--reset`` adds a fourth context, ``own_reset``: SCoRe's turn 2 with the position ids of the restated
``Q:b+a`` (and of what the model writes after it) restarting at 0, the first turn keeping 0.. (a model-side
probe, no method: greedy one problem at a time, no KV cache, :func:`reset_greedy`). It asks whether the
failure is the positions themselves or the content before the question.

Per model: turn 1's greedy accuracy, and per context the greedy accuracy with its standard error, and ``own`` and ``other`` as a ratio of
``fresh``. A base that never computed past one example's length re-solves poorly in ``other``/``own``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from selfgen.data.reasoning import correction_prompt
from selfgen.data.tasks import prompt_text
from selfgen.eval.statistics import standard_error
from selfgen.train.config import load_config
from selfgen.train.llm.lm import LMConfig, seed_examples, training_rows
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.prompts import RestatedRevisionFormat, swapped_question
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_lengths import VALIDATION_SEED, length_problems  # noqa: E402

CONTEXTS = ("fresh", "other", "own")
# the packed rows read by --packed_rows: v3's last-stage data mix packed to 256 tokens (test_llm_lm checks the mix)
PACKED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lm_arith_llama_v4_packed.yaml"


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


def reset_greedy(model, tokenizer, head: str, tail: str, max_new_tokens: int) -> str:
    """Greedy continuation of ``head + tail`` where ``tail`` and the continuation take position ids from 0
    again (``head`` keeps 0..len-1); stops at eos. Empty ``head``: plain greedy decoding of ``tail``."""
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    tail_ids = tokenizer(tail, add_special_tokens=False).input_ids
    written: list[int] = []
    for _ in range(max_new_tokens):
        ids = head_ids + tail_ids + written
        positions = list(range(len(head_ids))) + list(range(len(tail_ids) + len(written)))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions])).logits
        token = int(logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        written.append(token)
    return tokenizer.decode(written)


def position_correctness(model_dir: str, digits: int, count: int, split: str, reset: bool = False) -> dict[str, list[bool]]:
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
    if reset:
        tails = contexts["fresh"]  # the restated question closes SCoRe's turn-2 context
        solved["own_reset"] = [
            task.verify(p, reset_greedy(model, tokenizer, own[: -len(tail)], tail, params.max_new_tokens))
            for p, own, tail in zip(problems, contexts["own"], tails)
        ]
    return {"turn1": [task.verify(p, a) for p, a in zip(problems, attempts)], **solved}


def exact_by_index(input_ids: torch.Tensor, completion_mask: torch.Tensor, predicted: torch.Tensor, eos_token_id: int) -> dict[int, list[bool]]:
    """Per example index within its row (examples end at eos), whether every completion token equals
    ``predicted`` (the argmax at the position before it): ``input_ids`` etc. are ``[rows, length]``."""
    exact: dict[int, list[bool]] = {}
    for ids, mask, guess in zip(input_ids.tolist(), completion_mask.tolist(), predicted.tolist()):
        start = 0
        for index, end in enumerate(i for i, token in enumerate(ids) if token == eos_token_id):
            scored = [t for t in range(max(start, 1), end + 1) if mask[t]]
            exact.setdefault(index, []).append(all(guess[t - 1] == ids[t] for t in scored))
            start = end + 1
    return exact


def packed_exact(model_dir: str, rows: int) -> dict[int, list[bool]]:
    """:func:`exact_by_index` of the model on ``rows`` packed rows of the v3 data mix (module docstring)."""
    model, tokenizer = load_policy(model_dir)
    config = load_config(LMConfig, PACKED_CONFIG, {"seed": VALIDATION_SEED, "num_seed_examples": 8 * rows})
    [(max_digits, _)], [min_digits] = config.stages(), config.stage_min_digits()
    packed, collate = training_rows(config, tokenizer, seed_examples(config, max_digits, 0, min_digits))
    batch = collate(packed[:rows])
    with torch.no_grad():
        logits = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return exact_by_index(batch["input_ids"], batch["completion_mask"], logits.argmax(-1), tokenizer.eos_token_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--split", default="validation", choices=("eval", "validation"))
    parser.add_argument("--reset", action="store_true", help="also SCoRe's turn 2 with the restated question's position ids from 0")
    parser.add_argument("--packed_rows", type=int, default=0, help="also read R packed pretraining rows teacher-forced")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    missing = [model for model in args.models if not (Path(model) / "config.json").is_file()]
    if missing:  # refused before any model is read
        raise FileNotFoundError(f"--models: {missing} are not saved causal LM folders (no config.json)")
    results = {}
    for model in args.models:
        results[model] = position_correctness(model, args.digits, args.problems, args.split, args.reset)
        rates = {name: sum(items) / len(items) for name, items in results[model].items()}
        cells = "  ".join(f"{name} {rates[name]:.3f} +- {standard_error(results[model][name]):.3f}" for name in rates)
        ratios = "  ".join(f"{name}/fresh {rates[name] / max(rates['fresh'], 1e-9):.2f}" for name in rates if name not in ("turn1", "fresh"))
        print(f"{model:<48} {cells}  {ratios}", flush=True)
        if args.packed_rows:
            exact = packed_exact(model, args.packed_rows)
            results[model]["packed_exact"] = {str(index): items for index, items in exact.items()}
            print("    packed rows, exact completion by example index: " + "  ".join(
                f"{index}: {sum(items) / len(items):.2f} (n={len(items)})" for index, items in sorted(exact.items()) if index < 6), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"split": args.split, "digits": args.digits, "correct": results}))


if __name__ == "__main__":
    main()
