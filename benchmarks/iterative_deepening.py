"""Iterative Deepening Sampling vs plain sampling + majority vote at equal generated tokens.

    OMP_NUM_THREADS=1 python benchmarks/iterative_deepening.py --model outputs/score-arith/pipeline \\
        [--task arith --min_digits 3 --max_digits 4] [--problems 500] [--id_samples 4] [--plain_samples 16]

1. Selection on validation (training-split problems, never the held-out ones): every schedule of
   ``--grid`` (``b0:growth:rounds``) draws one ID-sample per problem; the schedule with the best
   single-sample accuracy is kept (ties: fewer tokens).
2. Held-out: ``--plain_samples`` plain T = 1 samples and ``--id_samples`` ID-samples (the chosen
   schedule, same temperature) per problem. For ID vote@N (N = 1, 2, 4, ..) the plain vote@M whose mean
   generated tokens per problem are nearest to ID's is its equal-token control;
   the table gives both accuracies and their paired difference (per problem) with its standard error.
   ``--rows`` recomputes the tables from a previous run's ``--out`` file (no generation).
"""

from __future__ import annotations

import argparse
import json

from selfgen.data.tasks import derive_seed, get_task
from selfgen.eval.statistics import mean_difference, standard_error
from selfgen.train.llm.iterative_deepening import aggregate, final_answer, iterative_deepening
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.prompts import PromptFormat
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--task", default="arith")
    parser.add_argument("--min_digits", type=int, default=3)
    parser.add_argument("--max_digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--validation_problems", type=int, default=200)
    parser.add_argument("--plain_samples", type=int, default=16)
    parser.add_argument("--id_samples", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=64, help="plain sampling's budget per sample")
    parser.add_argument("--grid", default="24:2:3,48:2:2,48:2:3", help="ID schedules b0:growth:rounds")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write per-problem results (JSONL) here")
    parser.add_argument("--rows", default=None, help="recompute the tables from this --out file of an earlier run")
    args = parser.parse_args()

    task = get_task(args.task, min_digits=args.min_digits, max_digits=args.max_digits) if args.task in ("add", "arith", "mul") else get_task(args.task)
    fmt = PromptFormat()
    problems = task.sample(args.problems, EVAL_SEED, "eval")

    def right(problem, answer) -> bool:
        return answer is not None and task.verify(problem, "A:" + answer, fmt.answer)

    if args.rows:
        rows = [json.loads(line) for line in open(args.rows)]
        args.plain_samples, args.id_samples = len(rows[0]["plain_answers"]), len(rows[0]["id_answers"])
    else:
        rows = generate(args, task, fmt, problems, right)
    report(args, problems, rows, right, fmt)


def generate(args, task, fmt, problems, right) -> list[dict]:
    model, tokenizer = load_policy(args.model, "float32")

    def id_samples(problems, schedule, n, seed):
        b0, growth, rounds = schedule
        return iterative_deepening(
            model, tokenizer, fmt, problems, initial_budget=b0, growth=growth, max_rounds=rounds,
            max_new_tokens=10_000, num_samples=n, temperature=args.temperature, seed=seed,
        )

    # 1. schedule selection on training-split problems
    validation = task.sample(args.validation_problems, derive_seed(args.seed, 77_001), "train")
    schedules = [tuple(float(v) if i == 1 else int(v) for i, v in enumerate(item.split(":"))) for item in args.grid.split(",")]
    chosen, best = None, None
    for schedule in schedules:
        samples = id_samples(validation, schedule, 1, args.seed)
        accuracy = sum(right(p, final_answer(e)) for p, e in zip(validation, samples)) / len(samples)
        tokens = sum(sum(e.new_tokens) for e in samples) / len(samples)
        print(f"validation schedule b0={schedule[0]} growth={schedule[1]} rounds={schedule[2]}: accuracy {accuracy:.3f}, tokens {tokens:.1f}")
        if best is None or (accuracy, -tokens) > best:
            chosen, best = schedule, (accuracy, -tokens)
    print(f"chosen schedule: {chosen}")

    # 2. held-out comparison
    params = SamplingParams(temperature=args.temperature, num_samples=args.plain_samples, max_new_tokens=args.max_new_tokens, batch_size=256)
    plain = generate_rollouts(model, tokenizer, [fmt.prompt(p.question) for p in problems], params, seed=args.seed + 1)
    deep = id_samples(problems, chosen, args.id_samples, args.seed + 2)
    rows = []
    for i, problem in enumerate(problems):
        p = plain[i * args.plain_samples : (i + 1) * args.plain_samples]
        d = deep[i * args.id_samples : (i + 1) * args.id_samples]
        rows.append({
            "id": problem.id,
            "plain_answers": [fmt.answer(r.text) for r in p], "plain_tokens": [len(r.completion_ids) for r in p],
            "id_answers": [final_answer(e) for e in d], "id_tokens": [sum(e.new_tokens) for e in d],
            "id_texts": [e.texts for e in d],
        })
    if args.out:
        with open(args.out, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return rows


def report(args, problems, rows, right, fmt) -> None:
    # what the trigger does inside the ID-samples: the first segment's answer vs the sample's final answer
    pairs = [
        (right(problem, fmt.answer(texts[0])), right(problem, answer))
        for row, problem in zip(rows, problems) for texts, answer in zip(row["id_texts"], row["id_answers"])
    ]
    n = len(pairs)
    print(
        f"ID-samples: first segment {sum(a for a, _ in pairs) / n:.3f}, final {sum(b for _, b in pairs) / n:.3f}, "
        f"i->c {sum(b and not a for a, b in pairs) / n:.3f}, c->i {sum(a and not b for a, b in pairs) / n:.3f} ({n} samples)"
    )

    def accuracy_at(kind: str, n: int) -> tuple[list[float], float]:
        correct, tokens = [], []
        for row, problem in zip(rows, problems):
            answers, counts = row[f"{kind}_answers"][:n], row[f"{kind}_tokens"][:n]
            choice = aggregate(answers, "vote")
            gold = next((a for a in answers if right(problem, a)), None)
            correct.append(float(choice is not None and gold is not None and choice == aggregate([gold])))
            tokens.append(sum(counts))
        return correct, sum(tokens) / len(tokens)

    plain_curve = {m: accuracy_at("plain", m) for m in range(1, args.plain_samples + 1)}
    print("\n| method | N | tokens / problem | accuracy (vote) |\n| --- | --- | --- | --- |")
    for m in (1, 2, 4, 8, 16):
        if m <= args.plain_samples:
            c, t = plain_curve[m]
            print(f"| plain | {m} | {t:.1f} | {sum(c) / len(c):.3f} +- {standard_error(c):.3f} |")
    print("\n| ID vote@N | tokens | accuracy | plain vote@M (equal tokens) | tokens | accuracy | ID - plain (paired) |\n| --- | --- | --- | --- | --- | --- | --- |")
    n = 1
    while n <= args.id_samples:
        c, t = accuracy_at("id", n)
        m = min(plain_curve, key=lambda m: abs(plain_curve[m][1] - t))
        pc, pt = plain_curve[m]
        diff, se = mean_difference(pc, c)
        print(f"| {n} | {t:.1f} | {sum(c) / len(c):.3f} +- {standard_error(c):.3f} | {m} | {pt:.1f} | {sum(pc) / len(pc):.3f} | {diff:+.3f} +- {se:.3f} |")
        n *= 2


if __name__ == "__main__":
    main()
