"""Fit ReST-MCTS*'s value model on its seed data D_V0 alone and measure how well it fits and ranks.

    OMP_NUM_THREADS=1 python benchmarks/llm_value_fit.py --config configs/rest_mcts_arith_llama.yaml
        --out runs/value-fit [--steps 200] [--learning_rate 0.001] [--auc_problems 100]

Builds D_V0 as the recipe does (``ReSTMCTSTrainer.seed_value_examples``: the config's
``value_warmup_problems`` worked solutions + ``value_warmup_samples`` policy samples each, targets by
eqs. 1-2), fits ``V_theta`` for ``--steps`` (default: the config's ``value_warmup_steps``) at
``--learning_rate`` (default: ``value_learning_rate``) into ``--out/value``, then prints its fit on
D_V0 (MSE against the targets' variance, correlation with the targets, prediction std) and its
ranking AUC on partial / complete solutions of the policy's own samples of validation problems
(``ReSTMCTSTrainer.value_auc``; training-split draws of ``VALIDATION_SEED``, never the test split). ``--out/value`` is what ``benchmarks/llm_search.py --value`` loads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from selfgen.train.config import load_config
from selfgen.train.llm.rest_mcts import ReSTMCTSConfig, ReSTMCTSTrainer, predict_values

sys.path.insert(0, str(Path(__file__).parent))
from llm_lengths import VALIDATION_SEED  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/rest_mcts_arith_llama.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--auc_problems", type=int, default=100)
    args = parser.parse_args()
    config = load_config(ReSTMCTSConfig, args.config)
    config = replace(
        config, output_dir=str(args.out), eval_problems=1, value_eval_pairs=1,
        value_warmup_steps=args.steps if args.steps is not None else config.value_warmup_steps,
        value_learning_rate=args.learning_rate if args.learning_rate is not None else config.value_learning_rate,
    )
    if not config.value_warmup_steps or not config.value_warmup_problems:
        raise ValueError("the config needs value_warmup_problems > 0 and --steps (or value_warmup_steps) > 0")
    trainer = ReSTMCTSTrainer(config=config)
    start = time.perf_counter()
    examples = trainer.seed_value_examples()
    logs = trainer.train_value_model(args.out, examples, config.value_warmup_steps, config.seed)
    fit_seconds = time.perf_counter() - start
    targets = np.array([target for _, target in examples])
    predicted = np.array(predict_values(trainer.value_model, trainer.tokenizer, [text for text, _ in examples]))
    summary = {
        "examples": len(examples), "steps": config.value_warmup_steps, "learning_rate": config.value_learning_rate,
        "fit_seconds": fit_seconds, "train_mse": float(np.mean((predicted - targets) ** 2)),
        "target_variance": float(targets.var()), "prediction_std": float(predicted.std()),
        "correlation": float(np.corrcoef(predicted, targets)[0, 1]), **logs,
    }
    if args.auc_problems:
        summary.update(trainer.value_auc(trainer.task.sample(args.auc_problems, VALIDATION_SEED), seed=VALIDATION_SEED))
    print(json.dumps(summary, indent=1))
    (args.out / "fit.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
