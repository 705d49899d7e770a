"""Ceilings of a two-turn correction before any training: the base model's turn 2 under each turn-2 format.

    OMP_NUM_THREADS=1 python benchmarks/llm_turn2_formats.py --model assets/lm-arith-llama-v3
        [--digits 4] [--problems 400] [--out formats.json]

The model answers ``--problems`` validation additions (training split, ``VALIDATION_SEED`` of
``benchmarks/llm_lengths.py``; never the test split) greedily once (turn 1); the same first attempts
are then revised greedily under every turn-2 format (``arith``: the ``R:`` mark alone; ``arith_restate``,
``arith_swap``, ``arith_hint``: :class:`~selfgen.train.llm.prompts.RestatedRevisionFormat`), and the
question is also prompted afresh, without the first attempt in context (:func:`fresh_variants`).
Per format: Acc@t2, Delta(t1,t2) with its paired 95% interval, i->c, c->i, the share of turns 2 that
copy turn 1's answer. Two fixed policies read straight off these: "always answer with this format's
turn 2" has Delta itself, and "keep every right first attempt, use this format's turn 2 on every wrong
one" (the ceiling of a keep decision that knows which attempts are right) has Delta = i->c.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from selfgen.data.problems import Problem
from selfgen.data.tasks import ArithmeticTask
from selfgen.eval.statistics import mean_difference
from selfgen.train.llm.prompts import RESTATED_TURN2, get_prompt_format
from selfgen.train.llm.revision import sample_revisions
from selfgen.train.llm.score import SCoReConfig, SCoReTrainer, correction_metrics

from llm_lengths import VALIDATION_SEED


def row(name: str, first: list[bool], second: list[bool], copies: float) -> dict[str, float | str]:
    """One format's line: SCoRe's correction metrics (:func:`correction_metrics`), Delta's paired 95%
    interval and the answer-copy share."""
    diff, se = mean_difference([float(x) for x in first], [float(x) for x in second])
    return {"format": name, **correction_metrics(first, second), "delta_low": diff - 1.96 * se,
            "delta_high": diff + 1.96 * se, "copies_answer": copies}


def fresh_variants(problems: list[Problem], answers: list[str | None]) -> list[tuple[str, list[str], list[str | None]]]:
    """Turn-2 prompts without the first attempt in context (a fresh sequence, the positions the base
    was pretrained at): ``fresh_swap`` (``b+a``), ``fresh_pad`` (both operands zero-padded one digit
    past the longer), ``fresh_hint`` (the question with the first attempt's answer as the hint line)."""
    pairs = [p.question.split("+") for p in problems]
    width = [max(len(a), len(b)) + 1 for a, b in pairs]
    return [
        ("fresh_swap", [f"{b}+{a}" for a, b in pairs], [None] * len(problems)),
        ("fresh_pad", [f"{a.zfill(w)}+{b.zfill(w)}" for (a, b), w in zip(pairs, width)], [None] * len(problems)),
        ("fresh_hint", [p.question for p in problems], list(answers)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=400)
    parser.add_argument("--formats", nargs="+", default=None, help="only these rows (default: every in-context and fresh format)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"--model: {args.model} is not a saved causal LM folder (no config.json)")
    problems = ArithmeticTask("add", args.digits, args.digits).sample(args.problems, VALIDATION_SEED)
    with tempfile.TemporaryDirectory() as output_dir:
        config = SCoReConfig(output_dir=output_dir, task="arith", min_digits=args.digits, max_digits=args.digits, eval_problems=1)
        trainer = SCoReTrainer(model=args.model, config=config)
    first_rollouts = trainer.solve(problems, temperature=0.0, num_samples=1)
    attempts = [r.text for r in first_rollouts]
    first = [trainer.verify(p, t) for p, t in zip(problems, attempts)]
    answers = [trainer.format.answer(t) for t in attempts]
    rows, samples = [], {}
    for name in ("arith", *(f"arith_{style}" for style in RESTATED_TURN2)):
        if args.formats and name not in args.formats:
            continue
        fmt = get_prompt_format(name, trainer.tokenizer)
        episodes = sample_revisions(
            trainer.policy, trainer.tokenizer, fmt, problems, rounds=2, max_new_tokens=config.max_new_tokens,
            temperature=0.0, first_attempts=attempts, verify=trainer.verify,
        )
        texts = [e.texts[1] for e in episodes]
        second = [trainer.verify(p, t) for p, t in zip(problems, texts)]
        copies = sum(fmt.answer(t) == a for t, a in zip(texts, answers)) / len(texts)
        rows.append(row(name, first, second, copies))
        samples[name] = [episodes[i].turns[1].rollout.prompt[-40:] + "|" + texts[i] for i in range(3)]
    for name, questions, hints in fresh_variants(problems, answers):
        if args.formats and name not in args.formats:
            continue
        fresh_prompts = [trainer.format.prompt(q, h) for q, h in zip(questions, hints)]
        fresh_texts = [r.text for r in trainer.sample(fresh_prompts, temperature=0.0, num_samples=1)]
        fresh = [trainer.verify(p, t) for p, t in zip(problems, fresh_texts)]
        same = sum(trainer.format.answer(t) == a for t, a in zip(fresh_texts, answers)) / len(answers)
        rows.append(row(name, first, fresh, same))
        samples[name] = [fresh_prompts[i] + "|" + fresh_texts[i] for i in range(3)]
    print(f"{args.model}: {args.problems} validation {args.digits}-digit additions, greedy; Acc@t1 {sum(first) / len(first):.3f}")
    for r in rows:
        print(f"  {r['format']:<15} Acc@t2 {r['accuracy_t2']:.3f}  Delta {r['delta_t1_t2']:+.3f} [{r['delta_low']:+.3f}, "
              f"{r['delta_high']:+.3f}]  i->c (= oracle keep) {r['delta_i_to_c']:.3f}  c->i {r['delta_c_to_i']:.3f}"
              f"  same answer {r['copies_answer']:.3f}")
    for name, lines in samples.items():
        print(f"  {name} samples: " + " || ".join(repr(s) for s in lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "samples": samples}))


if __name__ == "__main__":
    main()
