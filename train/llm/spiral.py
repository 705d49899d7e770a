"""SPIRAL: self-play on zero-sum text games with role-conditioned advantage estimation (Liu et al., 2025,
"SPIRAL: Self-Play on Zero-Sum Games Incentivizes Reasoning via Multi-Agent Multi-Turn Reinforcement
Learning", spiral-rl/spiral).

One policy plays **both** seats of two-player zero-sum games (:mod:`selfgen.data.games`: tic-tac-toe,
Kuhn poker, a negotiation). Every iteration plays ``games_per_iteration`` self-play games of each game
in lockstep (one batched ``generate`` per turn over all unfinished games); each game ``G`` ends with
returns ``R_p`` (+1 win, -1 loss, 0 draw; Kuhn poker: the chips won). An illegal move ends the game:
the offender gets ``illegal_move_reward`` and the other player ``illegal_opponent_reward`` (-1.5 and
+0.5, as in the official code). **Role-conditioned advantage estimation** (RAE) keeps one running baseline per game
and role and credits every token of player ``p``'s own turns with

    A_{G,p}(tau) = R_p(tau) - b_{G,p},        then  b_{G,p} <- alpha b_{G,p} + (1 - alpha) R_p(tau)

(:class:`RoleBaselines`; the baseline is read before it absorbs the game, as the official code does,
so a game's own return never enters its baseline; ``alpha = baseline_decay`` = 0.95, b starts at 0).
Games are credited one by one in order, so the baseline also moves within an iteration. Turns with
``A = 0`` are dropped (``filter_zero_advantage``). The update is the policy gradient of
:class:`~selfgen.train.llm.objectives.GRPOObjective` on the precomputed advantages, with the
sampling logprobs as ``pi_old`` (clipped ratio, ``epsilon``), Dr. GRPO's token-sum reduction over a
constant ``move_max_new_tokens`` (as the official learner) and an optional k3 KL (``beta``, default 0)
to the policy that started self-play.

Evaluation (greedy, ``eval_games`` held-out games per game and opponent, the policy alternating
seats): win / draw / illegal-move rates against a uniformly random player in every game and against
perfect minimax play in tic-tac-toe, plus transfer: held-out greedy accuracy on the arithmetic task of
the config (``accuracy``).

Departures: (1) the tiny character-level ``assets/lm-arith`` knows no games, so an optional
supervised **warm-up** (``warmup_games`` > 0, the driver's ``seed_round``) fine-tunes it on
``M:<move>`` answers of random-vs-random games (uniformly random legal moves) so that self-play starts
from legal play; iteration 0 then records the warmed-up model and ``base_*`` the starting one. The
warm-up replays ``warmup_replay`` arithmetic worked examples per game example (training seeds): without
them the game SFT erased the arithmetic (held-out accuracy 0.655 -> 0.0), leaving no transfer to measure.
Self-play itself never sees arithmetic.
(2) The model answers with the move only (``M:<move>``), no chain of thought: a 0.86 M-parameter
model cannot write useful reasoning, so the "reasoning transfer" the paper studies has no channel here
beyond shared weights. (3) Kuhn poker is one hand, rewarded by the chips won (with win/loss rewards a single
hand makes "always call" optimal), its card shown as the rank digit (``kuhn_cards``: the Llama base's
embeddings of the unseen letters J and K are one collapsed vector), and the negotiation is our own small split-the-items game (not
TextArena's multi-round versions); all three games are trained together, as the paper's multi-game run. (4) Games are played in lockstep batches on one process, not by distributed actors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...data.games import (
    CARD_TEXTS,
    CARDS,
    GAMES,
    HELD_OUT_SEED,
    OPPONENTS,
    Player,
    TextGame,
    move_completion,
    new_game,
    parse_move,
    random_play_transcripts,
)
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import GRPOCollator, GRPOObjective, PolicySample, SFTCollator, SFTObjective, TextPair
from .rollout import Rollout, SamplingParams

REPLAY_SEED = 8_000  # the warm-up's arithmetic replay problems (training split)
# which fixed opponents each game is evaluated against
EVAL_OPPONENTS = {"tictactoe": ("random", "minimax"), "kuhn": ("random",), "negotiation": ("random",)}


@dataclass
class SPIRALConfig(IterativeConfig):
    task: str = "add"  # the transfer task: held-out arithmetic accuracy
    min_digits: int = 3
    games: list[str] = field(default_factory=lambda: ["tictactoe", "kuhn", "negotiation"])
    games_per_iteration: int = 128  # self-play games of each game per iteration
    baseline_decay: float = 0.95  # alpha of RAE's running baselines
    illegal_move_reward: float = -1.5
    illegal_opponent_reward: float = 0.5
    filter_zero_advantage: bool = True
    epsilon: float = 0.2
    beta: float = 0.0  # KL weight to the policy that started self-play (0: no reference)
    eval_games: int = 100  # per game and opponent, the policy alternating seats
    eval_temperature: float = 0.0
    warmup_games: int = 0  # > 0: SFT warm-up on this many random-vs-random games of each game
    warmup_steps: int = 200
    warmup_learning_rate: float = 1e-3
    warmup_replay: float = 0.5  # arithmetic worked examples added to the warm-up, per game example
    kuhn_cards: str = "rank"  # Kuhn poker observations show the card as "rank" (1-3) or "letter" (J, Q, K)
    move_max_new_tokens: int = 12  # a move's completion; max_new_tokens (64) is the arithmetic answers'
    max_length: int = 96
    learning_rate: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [name for name in self.games if name not in GAMES]
        if not self.games or unknown:
            raise ValueError(f"games must be a non-empty list of {sorted(GAMES)}, got {self.games}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        self.require_at_least_one("games_per_iteration", "eval_games", "warmup_steps", "move_max_new_tokens")
        if self.warmup_games < 0:
            raise ValueError(f"warmup_games must be >= 0 (0: no warm-up), got {self.warmup_games}")
        if self.warmup_replay < 0:
            raise ValueError(f"warmup_replay must be >= 0, got {self.warmup_replay}")
        if self.kuhn_cards not in CARD_TEXTS:
            raise ValueError(f"kuhn_cards must be one of {CARD_TEXTS}, got {self.kuhn_cards!r}")


class RoleBaselines:
    """RAE's per-game, per-role running-mean baselines ``b_{G,p}`` (all start at 0)."""

    def __init__(self, decay: float, values: Mapping[str, float] | None = None) -> None:
        self.decay = decay
        self.values: dict[str, float] = dict(values or {})

    @staticmethod
    def key(game: str, role: int) -> str:
        return f"{game}_p{role}"

    def advantage(self, game: str, role: int, reward: float) -> float:
        """``A = R - b_{G,p}``, then ``b_{G,p} <- alpha b_{G,p} + (1 - alpha) R``."""
        key = self.key(game, role)
        baseline = self.values.get(key, 0.0)
        self.values[key] = self.decay * baseline + (1.0 - self.decay) * reward
        return reward - baseline


@dataclass
class Turn:
    """One move the policy made: the seat it played and its rollout (prompt = the observation)."""

    player: int
    rollout: Rollout


class SPIRALTrainer(IterativeTrainer):
    config_class = SPIRALConfig
    uses_reward_fn = False  # rewards are game outcomes
    plot_keys = (
        "accuracy",
        "tictactoe_win_vs_random",
        "tictactoe_draw_vs_minimax",
        "kuhn_win_vs_random",
        "negotiation_win_vs_random",
        "selfplay_illegal",
        "kuhn_selfplay_bet_J",
        "kuhn_selfplay_bet_K",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        saved = self.baselines_path
        values = json.loads(saved.read_text()) if self.config.resume_from == "latest" and saved.is_file() else None
        self.baselines = RoleBaselines(self.config.baseline_decay, values)
        self.reference = None

    @property
    def baselines_path(self) -> Path:
        return self.output_dir / "role_baselines.json"

    # ----------------------------------------------------------------- playing

    def game_options(self, name: str) -> dict[str, str]:
        """How game ``name`` is rendered, as the config asks (Kuhn poker: ``kuhn_cards``)."""
        return {"card_text": self.config.kuhn_cards} if name == "kuhn" else {}

    def new_game(self, name: str, seed: int) -> TextGame:
        return new_game(name, seed, **self.game_options(name))

    def play(
        self, states: Sequence[TextGame], opponents: Sequence[Mapping[int, Player]], temperature: float, seed: int
    ) -> list[list[Turn]]:
        """Play every game to its end; seats in ``opponents[i]`` are fixed players, the others the policy.

        All games advance in lockstep: each round the fixed players move, then one batched ``sample``
        gives the policy's moves in every game where it is to act."""
        turns: list[list[Turn]] = [[] for _ in states]
        for step in range(10_000):
            waiting = []
            for index, state in enumerate(states):
                if not state.done and state.current_player in opponents[index]:
                    state.apply(opponents[index][state.current_player](state))
                if not state.done and state.current_player not in opponents[index]:
                    waiting.append(index)
            if not waiting:
                if all(state.done for state in states):
                    return turns
                continue
            rollouts = self.sample_moves([states[index].observation() for index in waiting], temperature, seed + step)
            for index, rollout in zip(waiting, rollouts):
                turns[index].append(Turn(states[index].current_player, rollout))
                states[index].apply(parse_move(rollout.text))
        raise RuntimeError("games did not finish within 10000 turns")

    def sample_moves(self, observations: list[str], temperature: float, seed: int) -> list[Rollout]:
        """One move per observation (at most ``move_max_new_tokens`` tokens, one line), timed as rollout."""
        params = SamplingParams(
            temperature=temperature, top_p=self.config.top_p, max_new_tokens=self.config.move_max_new_tokens,
            stop_strings=("\n",), batch_size=self.config.generation_batch_size,
        )
        return self.generate(observations, params, seed)

    def training_returns(self, state: TextGame) -> tuple[float, float]:
        """``(R_0, R_1)`` of a finished self-play game, with the illegal-move rewards of the config."""
        if state.illegal_player is None:
            return state.returns()
        rewards = [self.config.illegal_opponent_reward] * 2
        rewards[state.illegal_player] = self.config.illegal_move_reward
        return rewards[0], rewards[1]

    # ----------------------------------------------------------------- the recipe

    def seed_round(self) -> Round | None:
        """The warm-up (a departure, see the module docstring): SFT on random legal moves of every game."""
        config = self.config
        if not config.warmup_games:
            return None
        pairs = [
            TextPair(observation, move_completion(move))
            for name in config.games
            for observation, move in random_play_transcripts(name, config.warmup_games, 0, **self.game_options(name))
        ]
        replay = self.task.sample(round(config.warmup_replay * len(pairs)), REPLAY_SEED + config.seed)
        logs = {"warmup_game_examples": float(len(pairs)), "warmup_replay_examples": float(len(replay))}
        pairs += [TextPair(self.prompt(p), self.task.worked_solution(p)) for p in replay]
        return Round(
            SFTObjective(), pairs, SFTCollator(self.tokenizer, config.max_length), logs,
            max_train_steps=config.warmup_steps, learning_rate=config.warmup_learning_rate,
        )

    def self_play_games(self, iteration: int) -> list[TextGame]:
        count = self.config.games_per_iteration
        first = (iteration - 1) * count * len(self.config.games)
        return [
            self.new_game(name, (first + offset * count + index) % HELD_OUT_SEED)
            for offset, name in enumerate(self.config.games)
            for index in range(count)
        ]

    def build_round(self, iteration: int) -> Round:
        config = self.config
        states = self.self_play_games(iteration)
        turns = self.play(states, [{}] * len(states), config.temperature, seed=iteration * 10_000)
        samples = []
        for state, game_turns in zip(states, turns):
            rewards = self.training_returns(state)
            for player in (0, 1):
                advantage = self.baselines.advantage(state.name, player, rewards[player])
                if config.filter_zero_advantage and advantage == 0.0:
                    continue
                samples += [
                    PolicySample(t.rollout.prompt_ids, t.rollout.completion_ids, advantage, t.rollout.logprobs)
                    for t in game_turns if t.player == player
                ]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.baselines_path.write_text(json.dumps(self.baselines.values))
        if config.beta and self.reference is None:
            self.reference = frozen_copy(self.policy)
        objective = GRPOObjective(
            self.reference, beta=config.beta, epsilon_low=config.epsilon, epsilon_high=config.epsilon,
            loss_type="dr_grpo", max_completion_length=config.move_max_new_tokens, temperature=config.temperature,
        )
        logs = {**self.self_play_logs(states, turns), "policy_samples": float(len(samples))}
        return Round(objective, samples, GRPOCollator(self.tokenizer.pad_token_id), logs)

    def self_play_logs(self, states: Sequence[TextGame], turns: Sequence[list[Turn]]) -> dict[str, float]:
        logs = {f"baseline_{key}": value for key, value in self.baselines.values.items()}
        for name in self.config.games:
            games = [(s, t) for s, t in zip(states, turns) if s.name == name]
            winners = [s.winner() for s, _ in games]
            logs[f"{name}_selfplay_p0_win"] = sum(w == 0 for w in winners) / len(games)
            logs[f"{name}_selfplay_draw"] = sum(w is None for w in winners) / len(games)
            logs[f"{name}_selfplay_illegal"] = sum(s.illegal_player is not None for s, _ in games) / len(games)
            logs[f"{name}_selfplay_turns"] = sum(len(t) for _, t in games) / len(games)
        logs["selfplay_illegal"] = sum(s.illegal_player is not None for s in states) / len(states)
        kuhn = [s for s in states if s.name == "kuhn"]
        for card in CARDS if kuhn else ():  # does the sampled policy use its card? P(bet | first to act, card)
            first = [s.history[:1] == ("bet",) for s in kuhn if s.cards[0] == card]
            logs[f"kuhn_selfplay_bet_{card}"] = sum(first) / max(len(first), 1)
        return logs

    # ----------------------------------------------------------------- evaluation

    def game_eval(self, name: str, opponent: str) -> dict[str, float]:
        """Win / draw / illegal rates of the greedy policy against ``opponent`` on held-out games."""
        count = self.config.eval_games
        seeds = [HELD_OUT_SEED + index for index in range(count)]
        states = [self.new_game(name, seed) for seed in seeds]
        seats = [index % 2 for index in range(count)]  # the policy's seat
        opponents = [{1 - seat: OPPONENTS[opponent](seed)} for seat, seed in zip(seats, seeds)]
        self.play(states, opponents, self.config.eval_temperature, seed=HELD_OUT_SEED)
        winners = [state.winner() for state in states]
        prefix = f"{name}_{{}}_vs_{opponent}"
        return {
            prefix.format("win"): sum(w == seat for w, seat in zip(winners, seats)) / count,
            prefix.format("draw"): sum(w is None for w in winners) / count,
            prefix.format("illegal"): sum(s.illegal_player == seat for s, seat in zip(states, seats)) / count,
        }

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()  # held-out accuracy on the transfer task
        for name in self.config.games:
            for opponent in EVAL_OPPONENTS[name]:
                metrics.update(self.game_eval(name, opponent))
        return metrics


def evaluate(
    model_path: str,
    output_dir: Path,
    games: list[str] | None = None,
    eval_games: int = 100,
    task: str = "add",
    min_digits: int = 3,
    max_digits: int = 4,
    eval_problems: int = 200,
) -> dict:
    """``selfgen eval spiral``: win rates against the fixed opponents and arithmetic accuracy."""
    config = SPIRALConfig(
        output_dir=str(output_dir), games=games or list(GAMES), eval_games=eval_games, task=task,
        min_digits=min_digits, max_digits=max_digits, eval_problems=eval_problems,
    )
    return SPIRALTrainer(model=model_path, config=config).evaluate()


METHOD = Method(
    name="spiral",
    summary="SPIRAL: self-play on zero-sum text games with role-conditioned advantage estimation",
    config_class=SPIRALConfig,
    train=run_recipe(SPIRALTrainer),
    evaluate=evaluate,
)
