"""Wall time of one iteration of each LLM recipe on the same model, split into rollout / reward / update.

    OMP_NUM_THREADS=1 python benchmarks/llm_recipes.py [--model assets/lm-arith] [--problems 16] [--samples 4] [--steps 4]

Every recipe runs one tiny iteration (same model, task, problems, samples per problem, optimiser
steps and batch size) into a temporary folder; the driver records the iteration's seconds in
``time_rollout_s`` (sampling), ``time_reward_s`` (rewarding, voting, judging, building samples) and
``time_update_s`` (the Trainer run). The table shows them and the total's ratio to GRPO's (the
reference: ground-truth GRPO on the same work). Held-out evaluation is not timed.

To add a recipe, append a :class:`RecipeRow` to ``RECIPES``; a recipe with its own speed measure
(e.g. ReST-MCTS*'s node expansions per second) passes ``extra_columns``: a function of the trainer
and the iteration record returning ``{column: value}``, printed as extra columns.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfgen.train.llm.co_reward import CoRewardConfig, CoRewardTrainer
from selfgen.train.llm.driver import IterativeConfig, IterativeTrainer
from selfgen.train.llm.expo import ExPOConfig, ExPOTrainer
from selfgen.train.llm.grpo import GRPOConfig, GRPOTrainer
from selfgen.train.llm.laser import LaSeRConfig, LaSeRTrainer
from selfgen.train.llm.rest_mcts import ReSTMCTSConfig, ReSTMCTSTrainer
from selfgen.train.llm.rlccf import RLCCFConfig, RLCCFTrainer
from selfgen.train.llm.spc import SPCConfig, SPCTrainer
from selfgen.train.llm.spiral import SPIRALConfig, SPIRALTrainer

PHASES = ("rollout", "reward", "update")


@dataclass
class RecipeRow:
    name: str
    trainer_class: type[IterativeTrainer]
    config_class: type[IterativeConfig]
    options: dict[str, Any] = field(default_factory=dict)
    extra_columns: Callable[[IterativeTrainer, dict[str, float]], dict[str, float]] | None = None


RECIPES: list[RecipeRow] = [
    RecipeRow("grpo (reference)", GRPOTrainer, GRPOConfig),
    RecipeRow("co_reward", CoRewardTrainer, CoRewardConfig),  # 2x the groups: every question is also rephrased
    RecipeRow("rlccf (3 models)", RLCCFTrainer, RLCCFConfig, {"num_models": 3}),
    RecipeRow("laser", LaSeRTrainer, LaSeRConfig, {"best_of_n": 0}),
    RecipeRow("expo", ExPOTrainer, ExPOConfig),
    # SPC's warm-up (its seed round) is not part of the timed iteration: keep it short
    RecipeRow("spc", SPCTrainer, SPCConfig, {"warmup_examples": 64, "warmup_train_steps": 4}),
    RecipeRow(
        "rest_mcts", ReSTMCTSTrainer, ReSTMCTSConfig, {"num_rollouts": 4, "search_eval_problems": 4},
        extra_columns=lambda trainer, record: {"expansions/s": record["expansions_per_s"]},
    ),
    RecipeRow("spiral (games)", SPIRALTrainer, SPIRALConfig, {"games_per_iteration": 16, "eval_games": 4}),
]


def run_row(row: RecipeRow, model: str, common: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """One iteration of ``row``'s recipe in a temporary folder: its record and its extra columns."""
    with tempfile.TemporaryDirectory() as output_dir:
        config = row.config_class(output_dir=output_dir, **{**common, **row.options})
        trainer = row.trainer_class(model=model, task="arith", config=config)
        record = trainer.train()[1]
        extra = row.extra_columns(trainer, record) if row.extra_columns else {}
    return record, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/lm-arith")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    common = dict(
        iterations=1, problems_per_iteration=args.problems, samples_per_problem=args.samples, max_train_steps=args.steps,
        train_batch_size=16, eval_problems=8, min_digits=3, max_digits=4, max_new_tokens=64, logging_steps=args.steps,
        seed=0,
    )
    results = [(row.name, *run_row(row, args.model, common)) for row in RECIPES]
    extra_keys = list(dict.fromkeys(key for _, _, extra in results for key in extra))
    reference = sum(results[0][1][f"time_{phase}_s"] for phase in PHASES)
    header = f"{'recipe':<20}" + "".join(f"{phase + ' s':>11}" for phase in PHASES) + f"{'total s':>10}{'ratio':>8}"
    print(header + "".join(f"{key:>16}" for key in extra_keys))
    for name, record, extra in results:
        seconds = [record[f"time_{phase}_s"] for phase in PHASES]
        line = f"{name:<20}" + "".join(f"{value:>11.2f}" for value in seconds)
        line += f"{sum(seconds):>10.2f}{sum(seconds) / reference:>8.2f}"
        print(line + "".join(f"{extra[key]:>16.2f}" if key in extra else f"{'':>16}" for key in extra_keys))


if __name__ == "__main__":
    main()
