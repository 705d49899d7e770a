"""SPIRAL on Kuhn poker: does the policy use its card? Move probabilities by card, and head-to-head chips.

    OMP_NUM_THREADS=1 python benchmarks/kuhn_cards.py --models runs/spiral-kuhn-llama/iteration-0/model
        runs/spiral-kuhn-llama/pipeline [--kuhn_cards rank] [--samples 400] [--temperature 1.0]
        [--versus runs/spiral-kuhn-llama/iteration-0/model --games 1000]

For each model, card (J, Q, K) and betting history (first to act; second after a check; second facing
a bet; first facing a bet after its check) the policy's observation is built by
:class:`~selfgen.data.games.KuhnPoker` (``--kuhn_cards``: the card as its rank or its letter, as the model
was trained). Printed per card:

* ``exact``: the policy's exact probability of the aggressive move (``bet``, or ``call`` facing a bet) and
  of the other legal move, ``P(M:<move>) * P(end of line | M:<move>)`` from one forward pass at
  ``--temperature`` (the rest is illegal text), the K - J difference, and the K - J difference of
  ``log P(aggressive)`` in nats (0 for a card-blind policy);
* ``sampled``: the rate of the aggressive move in ``--samples`` moves sampled at ``--temperature``
  (an independent sampling seed per card and history), with the K - J difference and its 95% interval.

``--versus MODEL``: every model plays ``--games`` held-out deals against ``MODEL`` and against a uniformly
random player, both sampling at ``--temperature``, each deal twice with the seats swapped (duplicate
poker: the cards' luck cancels within a deal). Printed: the mean chips won per hand (an illegal move
loses 1) with its 95% interval over deals, and the win rate.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

import torch

from selfgen.data.games import CARD_TEXTS, CARDS, HELD_OUT_SEED, KUHN_ACTIONS, KuhnPoker, RandomPlayer, parse_move
from selfgen.eval.statistics import standard_error
from selfgen.train.llm.spiral import SPIRALConfig, SPIRALTrainer

HISTORIES = [(), ("check",), ("bet",), ("check", "bet")]
AGGRESSIVE = {"check": "bet", "bet": "call"}  # the aggressive move, keyed by the last move before it (or none)


def observation(card: str, history: tuple[str, ...], card_text: str = "rank") -> str:
    player = len(history) % 2
    other = next(c for c in CARDS if c != card)
    state = KuhnPoker((card, other) if player == 0 else (other, card), card_text=card_text)
    for move in history:
        state.play(move)
    return state.observation()


@torch.no_grad()
def move_logprob(trainer: SPIRALTrainer, text: str, move: str, temperature: float) -> float:
    """``log P(M:<move>, then eos or a newline)`` under the policy at ``temperature``."""
    tokenizer, model = trainer.tokenizer, trainer.policy.eval()
    prompt = tokenizer(text, add_special_tokens=False).input_ids
    completion = tokenizer(f"M:{move}", add_special_tokens=False).input_ids
    logits = model(torch.tensor([prompt + completion])).logits[0] / temperature
    logprobs = logits.log_softmax(-1)[len(prompt) - 1 :]
    taken = sum(logprobs[index, token].item() for index, token in enumerate(completion))
    ends = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("\n")]
    return taken + torch.logsumexp(logprobs[len(completion), ends], 0).item()


def card_table(trainer: SPIRALTrainer, card_text: str, samples: int, temperature: float) -> None:
    for row, history in enumerate(HISTORIES):
        aggressive = AGGRESSIVE[history[-1] if history else "check"]
        passive = next(m for m in KUHN_ACTIONS[history] if m != aggressive)
        exact, other, rates = {}, {}, {}
        for column, card in enumerate(CARDS):
            text = observation(card, history, card_text)
            exact[card], other[card] = (math.exp(move_logprob(trainer, text, m, temperature)) for m in (aggressive, passive))
            moves = [parse_move(r.text) for r in trainer.sample_moves([text] * samples, temperature, seed=3 * row + column)]
            rates[card] = sum(m == aggressive for m in moves) / samples
        diff = rates["K"] - rates["J"]
        se = math.sqrt(sum(rates[c] * (1 - rates[c]) for c in "KJ") / samples)
        print(
            f"  history {','.join(history) or '-':<10} exact P({aggressive}) / P({passive}) "
            + " ".join(f"{c} {exact[c]:.3f} / {other[c]:.3f}" for c in CARDS)
            + f"  K-J {exact['K'] - exact['J']:+.3f} ({math.log(exact['K'] / exact['J']):+.3f} nats)"
            + "  | sampled " + " ".join(f"{c} {rates[c]:.3f}" for c in CARDS)
            + f"  K-J {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]",
            flush=True,
        )


def head_to_head(players: list, card_text: str, games: int, temperature: float) -> list[list[KuhnPoker]]:
    """Each held-out deal played to the end twice, ``players[0]`` in seat 0 and then in seat 1 (the
    finished states, per seat). A player is a trainer (samples its moves, batched over the deals) or a
    :class:`RandomPlayer`."""
    deals = [KuhnPoker.new(random.Random(HELD_OUT_SEED + index)).cards for index in range(games)]
    results = []
    for seat in (0, 1):  # players[0]'s seat
        states = [KuhnPoker(cards, card_text=card_text) for cards in deals]
        for step in range(4):  # a Kuhn hand has at most 3 moves
            for who, player in enumerate(players):
                acting = [s for s in states if not s.done and (s.current_player == seat) == (who == 0)]
                if not acting:
                    continue
                if isinstance(player, RandomPlayer):
                    moves = [player(s) for s in acting]
                else:
                    rollouts = player.sample_moves([s.observation() for s in acting], temperature, seed=100 * seat + step)
                    moves = [parse_move(r.text) for r in rollouts]
                for state, move in zip(acting, moves):
                    state.apply(move)
        results.append(states)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--kuhn_cards", default="rank", choices=CARD_TEXTS)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--versus", default=None, help="a model folder to play every model against")
    parser.add_argument("--games", type=int, default=1000)
    args = parser.parse_args()
    for model in args.models + ([args.versus] if args.versus else []):
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models/--versus: {model} is not a saved causal LM folder (no config.json)")
    with tempfile.TemporaryDirectory() as output_dir:
        config = SPIRALConfig(output_dir=output_dir, games=["kuhn"], eval_problems=1, kuhn_cards=args.kuhn_cards)
        versus = SPIRALTrainer(model=args.versus, config=config) if args.versus else None
        for model in args.models:
            trainer = SPIRALTrainer(model=model, config=config)
            print(f"{model} (cards as {args.kuhn_cards}; T={args.temperature}, {args.samples} samples per card and history)")
            card_table(trainer, args.kuhn_cards, args.samples, args.temperature)
            if versus is None:
                continue
            for name, opponent in (("random", RandomPlayer(0)), (args.versus, versus)):
                seats = head_to_head([trainer, opponent], args.kuhn_cards, args.games, args.temperature)
                hands = [[state.returns()[seat] for state in states] for seat, states in enumerate(seats)]
                chips = [(first + second) / 2 for first, second in zip(*hands)]  # per hand, paired by deal
                mean, se = sum(chips) / len(chips), standard_error(chips)
                wins = [sum(hand > 0 for hand in deal) / 2 for deal in zip(*hands)]
                win, win_se = sum(wins) / len(wins), standard_error(wins)
                illegal = sum(s.illegal_player == seat for seat, states in enumerate(seats) for s in states) / (2 * args.games)
                print(f"  vs {name}: chips per hand {mean:+.3f} [{mean - 1.96 * se:+.3f}, {mean + 1.96 * se:+.3f}], "
                      f"hands won {win:.3f} +- {win_se:.3f}, hands lost by its illegal move {illegal:.3f} "
                      f"({args.games} deals x 2 seats)", flush=True)


if __name__ == "__main__":
    main()
