"""Can a linear read-out of the frozen policy's hidden states predict ReST-MCTS*'s D_V0 value targets?

    OMP_NUM_THREADS=1 python benchmarks/llm_value_probe.py [--config configs/rest_mcts_arith_llama.yaml]

Builds D_V0 as the recipe does (``ReSTMCTSTrainer.seed_value_examples``) and reads two feature sets of
the starting policy: ``last`` - the last layer's state at each text's last token (the closing comma,
where the value head reads); ``last+mean8`` - that state with the mean of the last 8 tokens of the last
layer and of layer 2. Ridge regressions (several penalties) are fitted on the states of half the
problems; printed: the correlation with the targets on those and on the other half (held-out
problems), and the targets' correlation with the number of steps (docs/llm_part2.md, ReST-MCTS* pass 7).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from selfgen.train.config import load_config
from selfgen.train.llm.objectives import position_ids_from_mask
from selfgen.train.llm.rest_mcts import ReSTMCTSConfig, ReSTMCTSTrainer, ValueCollator


@torch.no_grad()
def features(trainer: ReSTMCTSTrainer, texts: list[str], batch_size: int = 128) -> dict[str, np.ndarray]:
    """The two feature sets of the module docstring, one row per text (left-padded batches)."""
    rows: dict[str, list[np.ndarray]] = {"last": [], "last+mean8": []}
    model = trainer.policy.eval()
    for start in range(0, len(texts), batch_size):
        batch = ValueCollator(trainer.tokenizer)([(text, 0.0) for text in texts[start : start + batch_size]])
        mask = batch["attention_mask"]
        hidden = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids_from_mask(mask),
                       output_hidden_states=True).hidden_states
        rows["last"].append(hidden[-1][:, -1].numpy())
        rows["last+mean8"].append(torch.cat([hidden[-1][:, -1], hidden[-1][:, -8:].mean(1), hidden[2][:, -8:].mean(1)], -1).numpy())
    return {name: np.concatenate(parts) for name, parts in rows.items()}


def ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Weights of ``min |Xw - y|^2 + penalty |w|^2`` (a bias column appended to ``x`` by the caller)."""
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/rest_mcts_arith_llama.yaml"))
    args = parser.parse_args()
    torch.manual_seed(0)
    config = replace(load_config(ReSTMCTSConfig, args.config), output_dir=tempfile.mkdtemp(), eval_problems=1, value_eval_pairs=1)
    trainer = ReSTMCTSTrainer(config=config)
    examples = trainer.seed_value_examples()
    texts, targets = [text for text, _ in examples], np.array([target for _, target in examples])
    questions = [text.split("\n")[0] for text in texts]
    fitted = set(sorted(set(questions))[: len(set(questions)) // 2])
    train = np.array([question in fitted for question in questions])
    for name, values in features(trainer, texts).items():
        x = np.c_[values, np.ones(len(values))]
        for penalty in (1e-2, 1e-1, 1.0, 10.0):
            predicted = x @ ridge(x[train], targets[train], penalty)
            corr = [np.corrcoef(predicted[part], targets[part])[0, 1] for part in (train, ~train)]
            print(f"{name:<11} penalty {penalty:<5} corr. fitted problems {corr[0]:.3f}, held-out problems {corr[1]:.3f}")
    steps = np.array([text.count(",") + ("\nA:" in text) for text in texts])
    print(f"corr(target, number of steps) {np.corrcoef(steps, targets)[0, 1]:.3f}")


if __name__ == "__main__":
    main()
