"""SPIRAL: role-conditioned baselines, illegal moves in self-play, one tiny iteration end to end, config errors."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from selfgen.data.games import TicTacToe
from selfgen.train.llm.rollout import Rollout
from selfgen.train.llm.spiral import RoleBaselines, SPIRALConfig, SPIRALTrainer

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")

TINY = dict(
    iterations=1, games_per_iteration=3, eval_games=2, eval_problems=3, max_new_tokens=16, min_digits=1, max_digits=2,
    games=["tictactoe", "kuhn"],
    max_train_steps=2, train_batch_size=4, logging_steps=1, warmup_games=4, warmup_steps=2, warmup_replay=0.2,
)


def test_role_baselines_are_per_game_and_role_and_read_before_the_update():
    baselines = RoleBaselines(decay=0.5)
    assert baselines.advantage("tictactoe", 0, 1.0) == 1.0  # b starts at 0
    assert baselines.values == {"tictactoe_p0": 0.5}
    assert baselines.advantage("tictactoe", 0, 1.0) == 0.5  # R - b with b = 0.5, then b = 0.75
    assert baselines.advantage("tictactoe", 1, -1.0) == -1.0  # the other role has its own baseline
    assert baselines.advantage("kuhn", 0, -1.0) == -1.0  # and so has another game
    assert baselines.advantage("tictactoe", 0, 0.0) == -0.75
    assert baselines.values == {"tictactoe_p0": 0.375, "tictactoe_p1": -0.5, "kuhn_p0": -0.5}


def scripted_moves(text):
    def sample_moves(observations, temperature, seed):
        return [Rollout(i, obs, text, [5, 6], [7, 1], [-0.5, -0.1]) for i, obs in enumerate(observations)]

    return sample_moves


@needs_asset
def test_illegal_moves_end_self_play_games_and_get_the_illegal_rewards(tmp_path):
    config = SPIRALConfig(output_dir=str(tmp_path), games=["tictactoe"], games_per_iteration=3, baseline_decay=0.9)
    trainer = SPIRALTrainer(model=str(ASSET), config=config)
    trainer.sample_moves = scripted_moves("M:0")  # never a legal cell
    round_ = trainer.build_round(1)
    # every game ends on player 0's first move: -1.5 - b for that move; player 1 made no move
    assert [s.advantage for s in round_.dataset] == pytest.approx([-1.5, -1.5 + 0.15, -1.5 + 0.15 + 0.135])
    assert round_.logs["tictactoe_selfplay_illegal"] == 1.0 and round_.logs["policy_samples"] == 3.0
    assert round_.logs["baseline_tictactoe_p1"] == pytest.approx(0.5 * (1 - 0.9**3))
    illegal = TicTacToe()
    illegal.apply("0")
    assert trainer.training_returns(illegal) == (-1.5, 0.5)
    assert (tmp_path / "role_baselines.json").is_file()


@needs_asset
def test_zero_advantage_turns_are_dropped(tmp_path):
    config = SPIRALConfig(output_dir=str(tmp_path), games=["tictactoe"], games_per_iteration=2, baseline_decay=0.0)
    trainer = SPIRALTrainer(model=str(ASSET), config=config)
    trainer.sample_moves = scripted_moves("M:0")
    assert [s.advantage for s in trainer.build_round(1).dataset] == [-1.5]  # game 2: R = b = -1.5


@needs_asset
def test_one_iteration_end_to_end(tmp_path):
    config = SPIRALConfig(output_dir=str(tmp_path / "run"), **TINY)
    trainer = SPIRALTrainer(model=str(ASSET), task="arith", config=config)
    report = trainer.train()
    assert [record["iteration"] for record in report.history] == [0, 1]
    first, last = report.history
    assert first["warmup_game_examples"] > 0 and first["warmup_replay_examples"] > 0 and "base_accuracy" in first
    for key in ("accuracy", "tictactoe_win_vs_random", "tictactoe_draw_vs_minimax", "kuhn_win_vs_random",
                "kuhn_illegal_vs_random", "baseline_kuhn_p1"):
        assert -1.5 <= last[key] <= 1.0
    assert "negotiation_win_vs_random" not in last  # only the configured games
    assert last["time_rollout_s"] > 0.0 and last["time_update_s"] > 0.0 and last["time_reward_s"] >= 0.0
    assert (tmp_path / "run" / "metrics.png").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(report.model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, trainer.policy(ids).logits)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="games"):
        SPIRALConfig(games=["chess"])
    with pytest.raises(ValueError, match="games"):
        SPIRALConfig(games=[])
    with pytest.raises(ValueError, match="baseline_decay"):
        SPIRALConfig(baseline_decay=1.0)
    with pytest.raises(ValueError, match="warmup_games"):
        SPIRALConfig(warmup_games=-1)
    with pytest.raises(ValueError, match="games_per_iteration"):
        SPIRALConfig(games_per_iteration=0)


def test_bundled_config_loads():
    from selfgen.train.config import load_config
    from selfgen.train.llm.spiral import METHOD

    config = load_config(SPIRALConfig, ASSET.parents[1] / "configs" / "spiral_games.yaml")
    assert METHOD.name == "spiral" and config.games == ["tictactoe", "kuhn", "negotiation"] and config.warmup_games > 0


@needs_asset
def test_eval_command_writes_win_rates(tmp_path):
    from selfgen.train.llm.spiral import evaluate

    metrics = evaluate(str(ASSET), tmp_path, games=["tictactoe"], eval_games=2, min_digits=1, max_digits=2, eval_problems=2)
    assert set(metrics) >= {"accuracy", "tictactoe_win_vs_random", "tictactoe_win_vs_minimax"}
    assert metrics["tictactoe_illegal_vs_minimax"] == 1.0  # the arithmetic LM knows no moves: it loses by an illegal one
