"""SPIRAL: role-conditioned baselines, illegal moves in self-play, one tiny iteration end to end, config errors."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from selfgen.data.games import CARDS, KuhnPoker, TicTacToe
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


def card_aware_moves(tokenizer):
    """A scripted Kuhn policy that uses its card: bets a King (rank 3) first to act, checks otherwise, calls a bet;
    its rollouts carry the real prompt token ids."""

    def sample_moves(observations, temperature, seed):
        rollouts = []
        for index, obs in enumerate(observations):
            move = "call" if "L:call" in obs else ("bet" if "C:3" in obs and "T:\n" in obs else "check")
            rollouts.append(Rollout(index, obs, f"M:{move}", tokenizer(obs).input_ids, [7, 1], [-0.5, -0.1]))
        return rollouts

    return sample_moves


@needs_asset
def test_kuhn_returns_reach_each_cards_moves_through_the_advantage(tmp_path):
    """A King's bet and a Jack's check must get their own game's chips (minus the seat's baseline), and the
    policy's prompt ids must carry the card: otherwise self-play cannot make the policy card-aware."""
    config = SPIRALConfig(output_dir=str(tmp_path), games=["kuhn"], games_per_iteration=24, baseline_decay=0.9)
    trainer = SPIRALTrainer(model=str(ASSET), config=config)
    trainer.sample_moves = card_aware_moves(trainer.tokenizer)
    round_ = trainer.build_round(1)
    assert round_.logs["kuhn_selfplay_bet_K"] == 1.0 and round_.logs["kuhn_selfplay_bet_J"] == 0.0
    assert round_.logs["kuhn_selfplay_bet_Q"] == 0.0
    replica, expected = RoleBaselines(0.9), []
    for state in trainer.self_play_games(1):
        first = CARDS.index(state.cards[0]) > CARDS.index(state.cards[1])
        chips = 2.0 if state.cards[0] == "K" else 1.0  # K: bet, call; otherwise: check, check
        returns = (chips, -chips) if first else (-chips, chips)
        expected += [(player, state.cards[player], replica.advantage("kuhn", player, returns[player])) for player in (0, 1)]
    samples = [(s, trainer.tokenizer.decode(s.prompt_ids)) for s in round_.dataset]
    assert len(samples) == len(expected)  # one move per seat per game, none with A = 0 here
    for (sample, prompt), (player, card, advantage) in zip(samples, expected):
        assert f"Y:{player}\nC:{CARDS.index(card) + 1}\n" in prompt
        assert sample.advantage == pytest.approx(advantage)
    king_bets = [s.advantage for s, prompt in samples if "Y:0\nC:3" in prompt]
    jack_checks = [s.advantage for s, prompt in samples if "Y:0\nC:1" in prompt]
    assert king_bets and jack_checks and min(king_bets) > 0.0 > max(jack_checks)


def test_the_kuhn_card_is_a_distinct_input_of_the_llama_base():
    """The card must reach the policy: the Llama base's (tied) embeddings of the tokens that show J, Q and K.
    Letters J and K were never in its pretraining text and share one collapsed vector (cosine 0.99), so
    the observation shows the rank digit, whose embeddings are far apart."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    base = ASSET.parent / "lm-arith-llama"
    if not (base / "model.safetensors").is_file():
        pytest.skip("assets/lm-arith-llama not built")
    tokenizer = AutoTokenizer.from_pretrained(base)
    embeddings = load_file(base / "model.safetensors")["model.embed_tokens.weight"]
    rows = []
    for card in CARDS:
        ids = tokenizer(KuhnPoker((card, "J" if card != "J" else "Q")).observation()).input_ids
        rows.append(ids)
    differ = [position for position in range(len(rows[0])) if len({ids[position] for ids in rows}) == 3]
    assert len(differ) == 1  # the card is one token, and only it changes
    vectors = torch.nn.functional.normalize(embeddings[[ids[differ[0]] for ids in rows]], dim=1)
    cosines = vectors @ vectors.T
    assert cosines[~torch.eye(3, dtype=torch.bool)].max() < 0.8


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
    with pytest.raises(ValueError, match="kuhn_cards"):
        SPIRALConfig(kuhn_cards="face")


def test_bundled_config_loads():
    from selfgen.train.config import load_config
    from selfgen.train.llm.spiral import METHOD

    config = load_config(SPIRALConfig, ASSET.parents[1] / "configs" / "spiral_games.yaml")
    assert METHOD.name == "spiral" and config.games == ["tictactoe", "kuhn", "negotiation"] and config.warmup_games > 0
    configs = ASSET.parents[1] / "configs"
    recipe, control = (vars(load_config(SPIRALConfig, configs / f"spiral_kuhn_llama{s}.yaml")) for s in ("", "_lr1e-4"))
    assert recipe["kuhn_cards"] == "rank" and recipe["games"] == ["kuhn"]
    assert {key for key in recipe if recipe[key] != control[key]} == {"learning_rate", "output_dir"}  # one change
    kl = vars(load_config(SPIRALConfig, configs / "spiral_kuhn_llama_kl.yaml"))
    assert {key for key in recipe if recipe[key] != kl[key]} == {"beta", "iterations", "output_dir"} and kl["beta"] > 0


@needs_asset
def test_eval_command_writes_win_rates(tmp_path):
    from selfgen.train.llm.spiral import evaluate

    metrics = evaluate(str(ASSET), tmp_path, games=["tictactoe"], eval_games=2, min_digits=1, max_digits=2, eval_problems=2)
    assert set(metrics) >= {"accuracy", "tictactoe_win_vs_random", "tictactoe_win_vs_minimax"}
    assert metrics["tictactoe_illegal_vs_minimax"] == 1.0  # the arithmetic LM knows no moves: it loses by an illegal one
