"""SPIRAL on Kuhn poker: does the policy use its card? Move rates by card at every decision point.

    OMP_NUM_THREADS=1 python benchmarks/kuhn_cards.py --models runs/spiral-kuhn-llama/iteration-0/model
        runs/spiral-kuhn-llama/pipeline [--samples 400] [--temperature 1.0]

For each model, card (J, Q, K) and betting history (first to act; second after a check; second facing
a bet; first facing a bet after its check) the policy's observation is built by
:class:`~selfgen.data.games.KuhnPoker` and ``--samples`` moves are sampled at ``--temperature`` (the
self-play temperature). Printed: the rate of the aggressive move (``bet``, or ``call`` facing a bet)
per card with its standard error, the K - J difference with its 95% interval (independent samples),
and the greedy move. A card-blind policy has equal rates for the three cards.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from selfgen.data.games import CARDS, KuhnPoker, parse_move
from selfgen.train.llm.spiral import SPIRALConfig, SPIRALTrainer

HISTORIES = [(), ("check",), ("bet",), ("check", "bet")]
AGGRESSIVE = {"check": "bet", "bet": "call"}  # the aggressive move, keyed by the last move before it (or none)


def observation(card: str, history: tuple[str, ...]) -> str:
    player = len(history) % 2
    cards = (card, next(c for c in CARDS if c != card)) if player == 0 else (next(c for c in CARDS if c != card), card)
    state = KuhnPoker(cards)
    for move in history:
        state.play(move)
    return state.observation()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
        with tempfile.TemporaryDirectory() as output_dir:
            trainer = SPIRALTrainer(model=model, config=SPIRALConfig(output_dir=output_dir, games=["kuhn"], eval_problems=1))
            print(f"{model} ({args.samples} samples at T={args.temperature} per card and history)")
            for history in HISTORIES:
                aggressive = AGGRESSIVE[history[-1] if history else "check"]
                rates, greedy = {}, {}
                for card in CARDS:
                    text = observation(card, history)
                    moves = [parse_move(r.text) for r in trainer.sample_moves([text] * args.samples, args.temperature, seed=0)]
                    rates[card] = sum(m == aggressive for m in moves) / len(moves)
                    greedy[card] = parse_move(trainer.sample_moves([text], 0.0, seed=0)[0].text)
                se = math.sqrt(sum(rates[c] * (1 - rates[c]) for c in "KJ") / args.samples)
                diff = rates["K"] - rates["J"]
                cells = "  ".join(f"{c} {rates[c]:.3f} +- {math.sqrt(rates[c] * (1 - rates[c]) / args.samples):.3f}" for c in CARDS)
                print(f"  history {','.join(history) or '-':<10} P({aggressive}): {cells}  K-J {diff:+.3f} "
                      f"[{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]  greedy {greedy}", flush=True)


if __name__ == "__main__":
    main()
