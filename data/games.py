"""Seeded two-player zero-sum text games for SPIRAL self-play: tic-tac-toe, Kuhn poker and a negotiation.

Each game is a state object with the same small interface:

* ``current_player`` (0 or 1), ``done``;
* ``legal_moves()`` - the move texts the player to act may send;
* ``apply(move_text)`` - plays a move; an **illegal move ends the game and loses it** (SPIRAL's rule,
  ``illegal_player`` records who sent it) and ``apply`` returns ``False``;
* ``observation()`` - the prompt of the player to act (only what that player may see);
* ``returns()`` - ``(R_0, R_1)``, zero-sum: +1 win / -1 loss / 0 draw (Kuhn poker: the chips won,
  +-1 or +-2, so that folding a weak card pays); ``winner()``.

The text protocol is written in the characters of the tiny character-level LM (digits, letters,
``, . : ; ? ! = + -``, newline; there are no brackets). An observation is a few ``KEY:value`` lines
after ``G:<game>`` and a player answers ``M:<move>``::

    tic-tac-toe  G:ttt\\nY:x\\nB:x.o,.x.,...\\nL:3,4,6,7,8,9\\n        -> M:9     (cells 1-9, row by row)
    Kuhn poker   G:kuhn\\nY:1\\nC:3\\nT:check\\nL:check,bet\\n         -> M:bet   (cards J < Q < K shown as 1 < 2 < 3)
    negotiation  G:deal\\nY:1\\nI:3,1,2\\nV:1,4,1\\nO:1,1,1\\nN:3\\n      -> M:accept or M:2,1,0

* **Tic-tac-toe**: x (player 0) moves first; three in a row wins, a full board is a draw.
* **Kuhn poker** (one hand): three cards J, Q, K, one dealt to each player, both ante 1. Player 0
  checks or bets 1; after a check player 1 checks (showdown for the antes) or bets; facing a bet a
  player calls (showdown for 2) or folds (loses the ante). The player who ends with chips wins; the
  return is the chips won. The observation shows the card as its rank ``1 < 2 < 3`` (``card_text="rank"``,
  the default) or as the letter (``"letter"``): the Llama arithmetic base never saw ``J`` or ``K`` in
  pretraining, and its (tied) embeddings of all unseen letters collapsed onto one vector (cosine 0.99
  between ``J`` and ``K``), so a letter card hardly reaches the policy, while the digits are its best-trained
  tokens.
* **Negotiation** (split the items): three item types with counts ``I``; each player has private
  values ``V`` per item. Players alternate, player 0 first, for at most ``max_turns`` turns: a
  move proposes how many of each item the *mover keeps* (``2,0,1``: the other gets the rest) or
  accepts the opponent's pending proposal; ``O`` shows what accepting it would give the player to act
  (empty before the first proposal) and ``N`` the number of turns left. After a deal each
  player's payoff is the share of their own total value they hold; the higher share wins (equal
  shares and no deal are draws).

Fixed opponents: :class:`RandomPlayer` (uniform over legal moves; in the negotiation it accepts a
pending offer with probability 1/2, otherwise a uniform proposal - uniform over all 28-65 moves would
almost never accept) and :class:`MinimaxPlayer` (perfect tic-tac-toe, random among equally good moves).
Game ``seed`` s below :data:`HELD_OUT_SEED` are for training; evaluation draws seeds from it upwards.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product

HELD_OUT_SEED = 10_000  # evaluation games use seeds >= this; training games stay below
MOVE_PATTERN = re.compile(r"M:([^\n]*)")


def move_completion(move: str) -> str:
    """The completion that plays ``move``."""
    return f"M:{move}"


def parse_move(completion: str) -> str:
    """The move of a completion: the text after the first ``M:`` on its line, stripped ("" without ``M:``)."""
    found = MOVE_PATTERN.search(completion)
    return found.group(1).strip() if found else ""


class TextGame:
    """Shared bookkeeping of the games: turn order, illegal moves, outcome; subclasses define the rules."""

    name = "game"
    current_player: int = 0
    done: bool = False
    illegal_player: int | None = None

    def legal_moves(self) -> list[str]:
        raise NotImplementedError

    def observation(self) -> str:
        raise NotImplementedError

    def play(self, move: str) -> None:
        """Play a legal ``move`` and advance the turn (sets ``done`` at the end)."""
        raise NotImplementedError

    def scores(self) -> tuple[float, float]:
        """Each player's result of a finished, legally played game (compared to decide the winner)."""
        raise NotImplementedError

    def apply(self, move_text: str) -> bool:
        """Play ``move_text`` for the player to act; an illegal move ends the game as that player's loss."""
        if self.done:
            raise ValueError(f"{self.name}: the game is over; no move can be applied")
        move = move_text.strip()
        if move not in self.legal_moves():
            self.illegal_player, self.done = self.current_player, True
            return False
        self.play(move)
        return True

    def random_move(self, rng: random.Random) -> str:
        return rng.choice(self.legal_moves())

    def winner(self) -> int | None:
        """0 or 1, or ``None`` for a draw; only for a finished game."""
        if not self.done:
            raise ValueError(f"{self.name}: the game is not finished")
        if self.illegal_player is not None:
            return 1 - self.illegal_player
        first, second = self.scores()
        return None if first == second else int(second > first)

    def returns(self) -> tuple[float, float]:
        """Zero-sum returns ``(R_0, R_1)``: +1 for the winner, -1 for the loser, 0 each for a draw."""
        winner = self.winner()
        if winner is None:
            return 0.0, 0.0
        return (1.0, -1.0) if winner == 0 else (-1.0, 1.0)

    def _switch(self) -> None:
        self.current_player = 1 - self.current_player


# ----------------------------------------------------------------- tic-tac-toe

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
MARKS = "xo"


def line_winner(board: str) -> str | None:
    """``"x"`` or ``"o"`` when that mark holds a full line of the 9-cell ``board``."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return None


@dataclass
class TicTacToe(TextGame):
    board: str = "." * 9
    name = "tictactoe"

    @classmethod
    def new(cls, rng: random.Random) -> TicTacToe:
        return cls()

    def legal_moves(self) -> list[str]:
        return [str(cell + 1) for cell, mark in enumerate(self.board) if mark == "."]

    def observation(self) -> str:
        rows = ",".join(self.board[row : row + 3] for row in (0, 3, 6))
        return f"G:ttt\nY:{MARKS[self.current_player]}\nB:{rows}\nL:{','.join(self.legal_moves())}\n"

    def play(self, move: str) -> None:
        cell = int(move) - 1
        self.board = self.board[:cell] + MARKS[self.current_player] + self.board[cell + 1 :]
        self.done = line_winner(self.board) is not None or "." not in self.board
        self._switch()

    def scores(self) -> tuple[float, float]:
        mark = line_winner(self.board)
        return (float(mark == "x"), float(mark == "o"))


@lru_cache(maxsize=None)
def minimax_value(board: str, mark: str) -> int:
    """The game-theoretic value of ``board`` with ``mark`` to move: +1 x wins, -1 o wins, 0 draw."""
    winner = line_winner(board)
    if winner is not None:
        return 1 if winner == "x" else -1
    empty = [cell for cell, value in enumerate(board) if value == "."]
    if not empty:
        return 0
    other = "o" if mark == "x" else "x"
    values = [minimax_value(board[:cell] + mark + board[cell + 1 :], other) for cell in empty]
    return max(values) if mark == "x" else min(values)


# ----------------------------------------------------------------- Kuhn poker

CARDS = "JQK"
CARD_TEXTS = ("rank", "letter")  # how an observation shows the card: "3" or "K"
KUHN_ACTIONS = {(): ("check", "bet"), ("check",): ("check", "bet"), ("bet",): ("call", "fold"),
                ("check", "bet"): ("call", "fold")}


@dataclass
class KuhnPoker(TextGame):
    cards: tuple[str, str] = ("J", "Q")
    history: tuple[str, ...] = ()
    card_text: str = "rank"
    name = "kuhn"

    def __post_init__(self) -> None:
        if self.card_text not in CARD_TEXTS:
            raise ValueError(f"card_text must be one of {CARD_TEXTS}, got {self.card_text!r}")

    @classmethod
    def new(cls, rng: random.Random, card_text: str = "rank") -> KuhnPoker:
        first, second = rng.sample(CARDS, 2)
        return cls((first, second), card_text=card_text)

    def legal_moves(self) -> list[str]:
        return list(KUHN_ACTIONS.get(self.history, ()))

    def observation(self) -> str:
        return (
            f"G:kuhn\nY:{self.current_player}\nC:{self.card_shown(self.cards[self.current_player])}\n"
            f"T:{','.join(self.history)}\nL:{','.join(self.legal_moves())}\n"
        )

    def card_shown(self, card: str) -> str:
        return str(CARDS.index(card) + 1) if self.card_text == "rank" else card

    def play(self, move: str) -> None:
        self.history = (*self.history, move)
        self.done = self.history not in KUHN_ACTIONS
        self._switch()

    def chips(self) -> tuple[int, int]:
        """Chips won by each player (zero-sum): a fold loses the ante, a showdown the pot's half."""
        if self.history[-1] == "fold":
            folder = len(self.history) - 1
            loser = folder % 2
            return (-1, 1) if loser == 0 else (1, -1)
        stake = 2 if "bet" in self.history else 1
        player0_wins = CARDS.index(self.cards[0]) > CARDS.index(self.cards[1])
        return (stake, -stake) if player0_wins else (-stake, stake)

    def scores(self) -> tuple[float, float]:
        first, second = self.chips()
        return float(first), float(second)

    def returns(self) -> tuple[float, float]:
        """The chips won (+-1 or +-2, zero-sum) rather than +-1: with a win/loss return, calling never
        loses more than folding, and "always call" is optimal in a single hand."""
        return super().returns() if self.illegal_player is not None else self.scores()


# ----------------------------------------------------------------- negotiation


@dataclass
class Negotiation(TextGame):
    counts: tuple[int, ...] = (1, 1, 1)
    values: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 1, 1), (1, 1, 1))
    max_turns: int = 4
    proposals: list[tuple[int, ...]] = field(default_factory=list)
    deal: tuple[int, ...] | None = None  # what player 0 keeps, once a proposal is accepted
    name = "negotiation"

    @classmethod
    def new(cls, rng: random.Random, max_turns: int = 4) -> Negotiation:
        counts = tuple(rng.randint(1, 3) for _ in range(3))
        values = tuple(_private_values(rng, counts) for _ in range(2))
        return cls(counts, values, max_turns)

    def all_proposals(self) -> list[str]:
        return [",".join(map(str, keep)) for keep in product(*(range(count + 1) for count in self.counts))]

    def legal_moves(self) -> list[str]:
        return self.all_proposals() + (["accept"] if self.proposals else [])

    def random_move(self, rng: random.Random) -> str:
        if self.proposals and rng.random() < 0.5:
            return "accept"
        return rng.choice(self.all_proposals())

    def observation(self) -> str:
        offer = ",".join(str(c - k) for c, k in zip(self.counts, self.proposals[-1])) if self.proposals else ""
        return (
            f"G:deal\nY:{self.current_player}\nI:{','.join(map(str, self.counts))}\n"
            f"V:{','.join(map(str, self.values[self.current_player]))}\nO:{offer}\n"
            f"N:{self.max_turns - len(self.proposals)}\n"
        )

    def play(self, move: str) -> None:
        if move == "accept":
            keep = self.proposals[-1]  # proposed by the other player, who moved last
            self.deal = keep if self.current_player == 1 else tuple(c - k for c, k in zip(self.counts, keep))
            self.done = True
            return
        self.proposals.append(tuple(int(part) for part in move.split(",")))
        self.done = len(self.proposals) >= self.max_turns
        self._switch()

    def scores(self) -> tuple[float, float]:
        """Each player's share of their own total value (0 each without a deal)."""
        if self.deal is None:
            return 0.0, 0.0
        kept = (self.deal, tuple(c - k for c, k in zip(self.counts, self.deal)))
        return tuple(
            sum(k * v for k, v in zip(kept[player], self.values[player]))
            / sum(c * v for c, v in zip(self.counts, self.values[player]))
            for player in (0, 1)
        )


def _private_values(rng: random.Random, counts: Sequence[int]) -> tuple[int, ...]:
    """Per-item values 0-5, not all zero (every player has something to gain)."""
    while True:
        values = tuple(rng.randint(0, 5) for _ in counts)
        if any(values):
            return values


# ----------------------------------------------------------------- registry and opponents

GAMES: dict[str, type[TextGame]] = {"tictactoe": TicTacToe, "kuhn": KuhnPoker, "negotiation": Negotiation}


def new_game(name: str, seed: int, **options) -> TextGame:
    """A fresh game ``name`` from ``seed`` (the deal of cards / items and private values); ``options``
    go to the game's ``new`` (Kuhn poker: ``card_text``)."""
    if name not in GAMES:
        raise ValueError(f"game must be one of {sorted(GAMES)}, got {name!r}")
    return GAMES[name].new(random.Random(seed), **options)


class RandomPlayer:
    """Plays ``state.random_move`` with its own seeded generator."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def __call__(self, state: TextGame) -> str:
        return state.random_move(self.rng)


class MinimaxPlayer:
    """Perfect tic-tac-toe: a move of the best minimax value, ties broken by its seeded generator."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def __call__(self, state: TextGame) -> str:
        if not isinstance(state, TicTacToe):
            raise ValueError(f"MinimaxPlayer plays tictactoe only, got {state.name!r}")
        mark, other = MARKS[state.current_player], MARKS[1 - state.current_player]
        sign = 1 if mark == "x" else -1
        scored = {}
        for move in state.legal_moves():
            cell = int(move) - 1
            scored[move] = sign * minimax_value(state.board[:cell] + mark + state.board[cell + 1 :], other)
        best = max(scored.values())
        return self.rng.choice([move for move, value in scored.items() if value == best])


OPPONENTS: dict[str, type] = {"random": RandomPlayer, "minimax": MinimaxPlayer}
Player = Callable[[TextGame], str]


def play_game(state: TextGame, players: Sequence[Player]) -> list[tuple[int, str, str]]:
    """Play ``state`` to the end with one callable per seat; returns ``(player, observation, move)`` per turn."""
    transcript = []
    while not state.done:
        player, observation = state.current_player, state.observation()
        move = players[player](state)
        transcript.append((player, observation, move))
        state.apply(move)
    return transcript


def random_play_transcripts(name: str, num_games: int, first_seed: int = 0, **options) -> list[tuple[str, str]]:
    """``(observation, move)`` of every turn of ``num_games`` random-vs-random games, game seeds
    ``first_seed, first_seed + 1, ...`` (all below :data:`HELD_OUT_SEED`; ``options`` as :func:`new_game`)."""
    if first_seed + num_games > HELD_OUT_SEED:
        raise ValueError(f"seeds {first_seed}..{first_seed + num_games - 1} reach the held-out seeds >= {HELD_OUT_SEED}")
    pairs = []
    for game_seed in range(first_seed, first_seed + num_games):
        players = [RandomPlayer(2 * game_seed), RandomPlayer(2 * game_seed + 1)]
        pairs += [(observation, move) for _, observation, move in play_game(new_game(name, game_seed, **options), players)]
    return pairs
