"""ReST-MCTS* search vs greedy decoding of the same policy, paired on the same problems.

    OMP_NUM_THREADS=1 python benchmarks/llm_search.py --run runs/rest-mcts-arith-llama --iteration 1
        [--config configs/rest_mcts_arith_llama.yaml] [--problems 1000] [--auc_problems 200] [--out search.json]
    OMP_NUM_THREADS=1 python benchmarks/llm_search.py --policy assets/lm-arith-llama --value runs/value-fit/value
        --split validation --problems 300 [--step_temperature 0.7] [--num_rollouts 16] [--answer terminal]
    OMP_NUM_THREADS=1 python benchmarks/llm_search.py --policy assets/lm-arith-llama --value runs/critic-warmup/iteration-0/model
        --value_kind critic [--value_aggregate min] --split validation [--auc_only --auc_problems 200]

The policy and value model are ``<run>/iteration-k/model`` and ``<run>/iteration-k/value`` (what the
recipe trained in that iteration), or ``--policy`` and ``--value`` (e.g. the D_V0 fit of
``benchmarks/llm_value_fit.py``); with ``--value_kind critic`` ``--value`` is a step critic (a causal LM, e.g. the
SPC warm-up's model) and states are valued by ``StepCriticValue`` (product or ``--value_aggregate min`` of its
per-step re-derivation probabilities). Problems: the first ``--problems`` held-out problems of the config's
task (``--split test``: seed ``EVAL_SEED``, the recipe's own held-out set) or fresh training-split draws
(``--split validation``: ``VALIDATION_SEED`` of ``benchmarks/llm_lengths.py``, for choosing settings).
Each is answered by greedy decoding and by the test-time MCTS* of the config (search fields overridable:
``--step_temperature --num_rollouts --exploration --unvisited_bonus --roll_branch --roll_forward_steps
--answer --value_kind --value_aggregate``; ``--min_digits --max_digits`` set the problems' length, e.g. 5 and 5 for the
next length up). Compute: wall seconds of greedy decoding and of the search, the greedy
tokens, and the search's sampled steps, generated tokens and value rows (``ReSTMCTSTrainer.compute``). One search is scored under every answer rule of ``ReSTMCTSConfig.answer``:

* ``search``: the highest value the search gave a complete solution (a tree terminal: its node value; a
  roll-forward's end: the highest value along that roll-forward, ``best``);
* ``terminal``: the highest ``V_theta`` of the complete solution itself;
* ``tree``: the official code's ``root.getBestV()`` restricted to complete tree nodes (roll-forward ends
  are not candidates there), falling back to ``terminal`` when the tree holds no complete solution;

and, as a reference that is not ReST-MCTS*, a majority vote over the distinct candidates' answers.
Prints each rule's accuracy and its paired difference to greedy with a 95% interval and McNemar's p,
the oracle rate (some candidate is correct), how often each rule picks a right candidate on problems
with right and wrong ones against a uniform pick, and the value model's ranking AUC on held-out partial
and complete solutions of the policy's own samples (``ReSTMCTSTrainer.value_auc`` on the first
``--auc_problems``; 0 skips it). ``--out`` saves the per-problem results. ``--chunk N`` searches N problems at
a time and prints (and saves) the report over the problems done so far after each chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from selfgen.eval.statistics import mcnemar, mean_difference, standard_error
from selfgen.train.config import load_config
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.rest_mcts import ANSWER_RULES, ReSTMCTSConfig, ReSTMCTSTrainer, load_value_model

sys.path.insert(0, str(Path(__file__).parent))
from llm_lengths import VALIDATION_SEED  # noqa: E402

OVERRIDES = {"step_temperature": float, "num_rollouts": int, "exploration": float, "unvisited_bonus": float,
             "roll_branch": int, "roll_forward_steps": int, "answer": str, "value_kind": str, "value_aggregate": str,
             "min_digits": int, "max_digits": int}


def model_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(policy, value) folders from ``--run/--iteration`` or ``--policy/--value``, checked."""
    if args.run is not None:
        if args.iteration is None:
            raise ValueError("--run needs --iteration")
        paths = (args.run / f"iteration-{args.iteration}" / "model", args.run / f"iteration-{args.iteration}" / "value")
    elif args.policy is not None and args.value is not None:
        paths = (args.policy, args.value)
    else:
        raise ValueError("give --run and --iteration, or --policy and --value")
    for path in paths:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a saved model folder (no config.json)")
    return paths


def report(name: str, greedy: list[bool], picked: list[bool]) -> str:
    diff, se = mean_difference([float(g) for g in greedy], [float(s) for s in picked])
    return (f"{name:<22} {sum(picked) / len(picked):.3f} +- {standard_error(picked):.3f}   - greedy {diff:+.3f} "
            f"[{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}] McNemar p={mcnemar(picked, greedy)['p_value']:.2g}")


def majority(candidates: list[tuple[str | None, bool]]) -> bool:
    """Majority vote over the distinct candidates' answers (ties: the first answer found)."""
    if not candidates:
        return False
    top = Counter(answer for answer, _ in candidates).most_common(1)[0][0]
    return next(ok for answer, ok in candidates if answer == top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a ReST-MCTS* output_dir")
    parser.add_argument("--iteration", type=int, default=None)
    parser.add_argument("--policy", type=Path, default=None)
    parser.add_argument("--value", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=Path("configs/rest_mcts_arith_llama.yaml"))
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--auc_problems", type=int, default=200)
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="the search's sampling seed")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="search this many problems at a time, reporting after each")
    parser.add_argument("--auc_only", action="store_true", help="print the value's ranking AUC on --auc_problems, no search")
    for name, kind in OVERRIDES.items():
        parser.add_argument(f"--{name}", type=kind, default=None)
    args = parser.parse_args()
    policy, value = model_paths(args)
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    with tempfile.TemporaryDirectory() as output_dir:
        critic = {"value_critic": str(value)} if overrides.get("value_kind") == "critic" else {}
        config = replace(load_config(ReSTMCTSConfig, args.config), output_dir=output_dir, eval_problems=args.problems,
                         value_eval_pairs=1, **overrides, **critic)
        trainer = ReSTMCTSTrainer(model=str(policy), config=config)
        if config.value_kind != "critic":
            trainer.value_model = load_value_model(value, trainer.tokenizer.pad_token_id)
        problems = trainer.eval_set if args.split == "test" else trainer.task.sample(args.problems, VALIDATION_SEED)
        if args.auc_only:
            print(json.dumps({"value": str(value), **overrides, **trainer.value_auc(problems[: args.auc_problems])}))
            return
        start = time.perf_counter()
        rollouts = trainer.solve(problems, temperature=0.0, num_samples=1)
        greedy = [trainer.verify(p, r.text) for p, r in zip(problems, rollouts)]
        compute = {"greedy_s": time.perf_counter() - start, "greedy_tokens": sum(len(r.completion_ids) for r in rollouts),
                   "search_s": 0.0}
        results, chunk = [], args.chunk or len(problems)
        for first in range(0, len(problems), chunk):  # the report so far after each chunk
            start = time.perf_counter()
            results += trainer.search(problems[first : first + chunk], seed=args.seed, early_stop=True)
            compute["search_s"] += time.perf_counter() - start
            compute.update(trainer.compute)
            done = problems[: len(results)]
            picks = {rule: [bool(t and t.correct) for t in trainer.answers(done, results, rule)] for rule in ANSWER_RULES}
            auc = trainer.value_auc(problems[: args.auc_problems]) if args.auc_problems and len(results) == len(problems) else {}
            summarise(args, f"{policy} + {value}", overrides, greedy[: len(results)], results, picks, compute, auc)


def summarise(args, models: str, overrides: dict, greedy: list[bool], results: list, picks: dict, compute: dict, auc: dict) -> None:
    """Print each rule's accuracy and paired difference to greedy, the oracle and the right-pick rates; save ``--out``."""
    candidates = [list({(t.steps, t.answer): (t.answer, t.correct) for t, _ in r.traces}.values()) for r in results]
    picks["majority vote (ref.)"] = [majority(c) for c in candidates]
    oracle = [any(ok for _, ok in c) for c in candidates]
    mixed = [i for i, c in enumerate(candidates) if len({ok for _, ok in c}) == 2]
    print(f"{models}: {len(results)} {args.split} problems, search {compute['search_s']:.0f} s, "
          f"settings {overrides or 'of the config'}; {sum(map(len, candidates)) / len(candidates):.1f} distinct candidates per problem")
    print("compute: " + ", ".join(f"{key} {number:.0f}" for key, number in compute.items()))
    for key, number in auc.items():
        print(f"{key} {number:.3f} ({args.split}, {args.auc_problems} problems x 4 samples)")
    print(f"{'greedy':<22} {sum(greedy) / len(greedy):.3f} +- {standard_error(greedy):.3f}")
    for rule, picked in picks.items():
        print(report(rule, greedy, picked))
    print(f"oracle (a correct candidate) {sum(oracle) / len(oracle):.3f}")
    if mixed:
        uniform = sum(sum(ok for _, ok in candidates[i]) / len(candidates[i]) for i in mixed) / len(mixed)
        rates = ", ".join(f"{rule} {sum(picks[rule][i] for i in mixed) / len(mixed):.3f}" for rule in picks)
        print(f"{len(mixed)} problems with right and wrong candidates, a right one picked: {rates} (uniform {uniform:.3f})", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"greedy": greedy, "picks": picks, "oracle": oracle, "settings": overrides, "compute": compute, **auc}))

if __name__ == "__main__":
    main()
