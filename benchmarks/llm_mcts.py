"""ReST-MCTS* tree-search speed on the bundled tiny LM: node expansions per second, in one process.

    OMP_NUM_THREADS=1 python benchmarks/llm_mcts.py [--model assets/lm-arith] [--problems 32] [--rollouts 8] [--branch 3]

An expansion samples ``branch`` next steps for one leaf and values them with the value model (plus the
simulation from the best new child). ``lockstep`` advances all trees together, so every phase is one
batched ``generate`` / forward call; the reference searches one problem at a time (same problems,
same settings). Each is timed once after a warm-up; writes nothing (the trainer's output_dir is a
temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile

from selfgen.train.llm.rest_mcts import ReSTMCTSConfig, ReSTMCTSTrainer, expansions_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/lm-arith")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--branch", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as output_dir:
        config = ReSTMCTSConfig(
            output_dir=output_dir, min_digits=3, max_digits=4, num_rollouts=args.rollouts, branch=args.branch,
            eval_problems=1, value_eval_pairs=1,
        )
        trainer = ReSTMCTSTrainer(model=args.model, task="arith", config=config)
        problems = trainer.problems(1)[: args.problems]
        trainer.search(problems[:2], seed=0)  # warm-up
        lockstep = expansions_per_second(trainer, problems, lockstep=True)
        sequential = expansions_per_second(trainer, problems, lockstep=False)
    print(f"{args.problems} problems x {args.rollouts} MCTS* rollouts, branch {args.branch}")
    print("| search | expansions/s | ratio |")
    print("| --- | --- | --- |")
    print(f"| lockstep (batched over problems) | {lockstep:.1f} | {lockstep / sequential:.2f}x |")
    print(f"| one problem at a time (reference) | {sequential:.1f} | 1.00x |")


if __name__ == "__main__":
    main()
