"""ReST-MCTS* search vs greedy decoding of the same policy, paired on the same held-out problems.

    OMP_NUM_THREADS=1 python benchmarks/llm_search.py --run runs/rest-mcts-arith-llama --iteration 2
        [--config configs/rest_mcts_arith_llama.yaml] [--problems 1000] [--auc_problems 200] [--out search.json]

Loads ``<run>/iteration-k/model`` (the policy) and ``<run>/iteration-k/value`` (the value model the
recipe trained in that iteration), draws the first ``--problems`` held-out problems of the config's
task (seed ``EVAL_SEED``, the recipe's own held-out set) and answers each twice: greedy decoding, and
the test-time MCTS* of the config (early stop at ``end_gate``, the answer is the highest-valued complete
solution). Prints both accuracies, the paired difference with its 95% interval and McNemar's p, the
oracle rate (some solution the search found is correct) and, on the problems whose candidates are
both right and wrong, how often the highest value picks a right one against a uniform pick, and the
value model's ranking AUC on held-out partial and complete solutions of the policy's own samples
(``ReSTMCTSTrainer.value_auc`` on the first ``--auc_problems``; 0 skips it).
``--out`` saves the per-problem results.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from selfgen.eval.statistics import mcnemar, mean_difference, standard_error
from selfgen.train.config import load_config
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.rest_mcts import ReSTMCTSConfig, ReSTMCTSTrainer, load_value_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a ReST-MCTS* output_dir")
    parser.add_argument("--iteration", type=int, required=True)
    parser.add_argument("--config", type=Path, default=Path("configs/rest_mcts_arith_llama.yaml"))
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--auc_problems", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    directory = args.run / f"iteration-{args.iteration}"
    for part in ("model", "value"):
        if not (directory / part / "config.json").is_file():
            raise FileNotFoundError(f"--run/--iteration: {directory / part} is not a saved model folder (no config.json)")
    with tempfile.TemporaryDirectory() as output_dir:
        config = replace(load_config(ReSTMCTSConfig, args.config), output_dir=output_dir, eval_problems=args.problems, value_eval_pairs=1)
        trainer = ReSTMCTSTrainer(model=str(directory / "model"), config=config)
        trainer.value_model = load_value_model(directory / "value", trainer.tokenizer.pad_token_id)
        problems = trainer.eval_set
        rollouts = trainer.solve(problems, temperature=0.0, num_samples=1)
        greedy = [trainer.verify(p, r.text) for p, r in zip(problems, rollouts)]
        start = time.perf_counter()
        results = trainer.search(problems, seed=EVAL_SEED, early_stop=True)
        search_seconds = time.perf_counter() - start
        auc = trainer.value_auc(problems[: args.auc_problems]) if args.auc_problems else {}
    search = [bool(r.best() and r.best().correct) for r in results]
    oracle = [any(t.correct for t, _ in r.traces) for r in results]
    mixed = [r for r in results if len({t.correct for t, _ in r.traces}) == 2]  # right and wrong candidates
    picked = [r.best().correct for r in mixed]
    by_chance = [sum(t.correct for t, _ in r.traces) / len(r.traces) for r in mixed]
    diff, se = mean_difference([float(g) for g in greedy], [float(s) for s in search])
    print(f"{directory}: {len(problems)} held-out problems, search {search_seconds:.0f} s")
    for key, value in auc.items():
        print(f"{key} {value:.3f} (held-out, {args.auc_problems} problems x 4 samples)")
    print(f"greedy {sum(greedy) / len(greedy):.3f} +- {standard_error(greedy):.3f}")
    print(f"search {sum(search) / len(search):.3f} +- {standard_error(search):.3f} (oracle: a correct solution found {sum(oracle) / len(oracle):.3f})")
    if mixed:
        print(f"{len(mixed)} problems with right and wrong candidates: the highest value picks a right one "
              f"{sum(picked) / len(mixed):.3f} (a uniform pick: {sum(by_chance) / len(mixed):.3f})")
    print(f"search - greedy {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}] McNemar p={mcnemar(search, greedy)['p_value']:.2g}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"greedy": greedy, "search": search, "oracle": oracle, **auc}))


if __name__ == "__main__":
    main()
