"""Can LaSeR's last-token self-reward learn at all? The MSE alone on the verifier's labels, held-out AUC vs steps.

    OMP_NUM_THREADS=1 python benchmarks/llm_self_reward_fit.py [--model assets/lm-arith-llama] [--digits 4] \\
        [--train_problems 512] [--n 8] [--val_problems 200] [--val_n 4] [--steps 600] [--batch_size 64] \\
        [--learning_rate 1e-4] [--warmup 50] [--eval_every 50] [--output_dir runs/self-reward-fit]

The gate before trusting a self-signal (docs/llm_part2.md, issue #18): no policy update, only
``alpha * E[w (r_s - r_v)^2]`` with ``r_s = beta_v (log pi(z_c | x, y) - c_ref)``
(:class:`selfgen.train.llm.laser.LaSeRObjective` with ``self_reward_only``) through the shared Trainer.

1. *Pools.* ``--n`` samples at T = 1 from the starting model per ``--train_problems`` training-split
   ``d``-digit additions (the fit's data), and ``--val_n`` per ``--val_problems`` validation problems
   (training split, ``VALIDATION_SEED`` of ``benchmarks/llm_lengths.py``; the test split stays for
   ``benchmarks/llm_self_reward.py``), each labelled by the verifier.
2. *Upper bounds from frozen features.* A logistic-regression probe on the starting model's final, normed
   hidden state at the eos position (what ``log pi(z_c | x, y)`` reads through the tied LM head) fitted on
   the train pool; its validation AUC bounds what re-training the ``z_c`` row alone could reach. Also the
   AUC of the sample's mean token log-probability (the policy's own confidence, no training).
3. *The fit.* ``--steps`` Adam steps of ``--batch_size`` samples from the train pool, the class weights
   computed once over the whole pool (the official code weighs over its rollout batch), ``--warmup``
   linear warm-up steps then a constant lr; every ``--eval_every`` steps the validation AUC (all finished
   samples and within one problem), the mean ``r_s`` of right and wrong samples and the AUC on the first
   train-pool samples (as many as validation: over-fitting shows as a gap),
   one JSON line each in ``<output_dir>/fit.jsonl``; the fitted model is saved to
   ``<output_dir>/pipeline``.

Departure from the official run: a fixed pool of the starting model's samples (the policy is not updated,
so they stay its samples up to the drift the MSE causes) instead of fresh rollouts per step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from selfgen.data.tasks import ArithmeticTask
from selfgen.train.llm.laser import LaSeRConfig, LaSeRTrainer, self_reward_aucs
from selfgen.train.llm.modeling import tokenizer_exporter
from selfgen.train.llm.objectives import position_ids_from_mask
from selfgen.train.llm.rollout import Rollout
from selfgen.train.trainer import Trainer, TrainerCallback

from llm_lengths import VALIDATION_SEED

FIT_SEED = 31_000  # the fit pool's training problems (no recipe draws with this seed)


def pool(trainer: LaSeRTrainer, problems, n: int, seed: int) -> tuple[list[Rollout], np.ndarray, np.ndarray]:
    """``n`` samples at T = 1 per problem, their verdicts and their problem index."""
    rollouts = trainer.solve(problems, temperature=1.0, num_samples=n, seed=seed)
    correct = np.array([trainer.verify(problems[i // n], r.text) for i, r in enumerate(rollouts)])
    return rollouts, correct, np.repeat(np.arange(len(problems)), n)


@torch.no_grad()
def eos_features(trainer: LaSeRTrainer, rollouts: list[Rollout], batch_size: int = 256) -> np.ndarray:
    """The final, normed hidden state at each rollout's last completion token (the input position whose
    next-token distribution holds ``log pi(z_c | x, y)``)."""
    collate, features = trainer.collator(), []
    model = trainer.policy.eval()
    for start in range(0, len(rollouts), batch_size):
        chunk = rollouts[start : start + batch_size]
        batch = collate([trainer.policy_sample(r, 0.0, 0.0) for r in chunk])
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        hidden = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                       output_hidden_states=True).hidden_states[-1]
        last = batch["prompt_ids"].shape[1] + batch["self_reward_index"] - 1
        features.append(hidden[torch.arange(len(chunk)), last].float().numpy())
    return np.concatenate(features)


def probe_auc(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, val_problem: np.ndarray) -> dict[str, float]:
    """Validation AUCs of a class-balanced logistic-regression probe fitted on the train features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000))
    probe.fit(train_x, train_y)
    return self_reward_aucs(probe.decision_function(val_x), val_y, val_problem)


class AUCLog(TrainerCallback):
    """Every ``every`` steps: validation and train-pool AUCs of ``r_s`` and its class means, to ``path``."""

    def __init__(self, laser: LaSeRTrainer, val, train, every: int, path: Path) -> None:
        self.laser, self.val, self.train, self.every, self.path = laser, val, train, every, path
        self.start = time.perf_counter()

    def record(self, model: torch.nn.Module, step: int, logs: dict[str, float]) -> None:
        row = {"step": step, "wall_s": round(time.perf_counter() - self.start, 1), **logs}
        for name, (rollouts, correct, problem) in (("val", self.val), ("train", self.train)):
            scores = self.laser.self_reward_scores(model, rollouts).numpy()
            scores = np.where([r.finished for r in rollouts], scores, -np.inf)
            finished = np.isfinite(scores)
            row.update({f"{name}_{k}": v for k, v in self_reward_aucs(scores, correct, problem).items()})
            row[f"{name}_r_s_right"] = float(scores[finished & correct].mean())
            row[f"{name}_r_s_wrong"] = float(scores[finished & ~correct].mean())
        model.train()
        print(json.dumps(row), flush=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def on_train_begin(self, trainer: Trainer) -> None:
        self.record(trainer.unwrapped_model, 0, {})

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if trainer.global_step % self.every == 0:
            self.record(trainer.unwrapped_model, trainer.global_step, logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/lm-arith-llama")
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--train_problems", type=int, default=512)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--val_problems", type=int, default=200)
    parser.add_argument("--val_n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--output_dir", type=Path, default=Path("runs/self-reward-fit"))
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"--model: {args.model} is not a saved causal LM folder (no config.json)")
    config = LaSeRConfig(
        output_dir=str(args.output_dir), export_dir=str(args.output_dir / "pipeline"), min_digits=args.digits,
        max_digits=args.digits, eval_problems=1, best_of_n=0, beta=0.0, self_reward_only=True,
        max_new_tokens=16 + 12 * (args.digits + 1), generation_batch_size=256, max_train_steps=args.steps,
        train_batch_size=args.batch_size, learning_rate=args.learning_rate, lr_warmup_steps=args.warmup,
        lr_scheduler="constant_with_warmup", logging_steps=args.eval_every, mixed_precision="no",
    )
    task = ArithmeticTask("add", args.digits, args.digits)
    laser = LaSeRTrainer(model=args.model, task=task, config=config)
    print(f"c_ref (measured on the starting model) {laser.reference_logprob:.2f}", flush=True)
    train = pool(laser, task.sample(args.train_problems, FIT_SEED), args.n, seed=FIT_SEED)
    val = pool(laser, task.sample(args.val_problems, VALIDATION_SEED), args.val_n, seed=VALIDATION_SEED)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"c_ref": laser.reference_logprob, "train_accuracy": float(train[1].mean()), "val_accuracy": float(val[1].mean())}
    for name, (rollouts, correct, _) in (("train", train), ("val", val)):
        summary[f"{name}_finished"] = float(np.mean([r.finished for r in rollouts]))
    finished = [np.array([r.finished for r in rollouts]) for rollouts, _, _ in (train, val)]
    features = [eos_features(laser, [r for r, f in zip(rollouts, keep) if f]) for (rollouts, _, _), keep in zip((train, val), finished)]
    summary["probe"] = probe_auc(features[0], train[1][finished[0]], features[1], val[1][finished[1]], val[2][finished[1]])
    confidence = np.array([np.mean(r.logprobs) if r.finished else -np.inf for r in val[0]])
    summary["mean_logprob"] = self_reward_aucs(confidence, val[1], val[2])
    print(json.dumps(summary), flush=True)
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    samples = [laser.policy_sample(r, 0.0, float(c)) for r, c in zip(train[0], train[1])]
    laser.weigh_samples(samples)
    (args.output_dir / "fit.jsonl").unlink(missing_ok=True)
    subset = tuple(part[: len(val[0])] for part in train)  # the train-pool AUC on as many samples as validation
    trainer = Trainer(
        laser.policy.train(), laser.objective(), samples, config, export_fn=tokenizer_exporter(laser.tokenizer),
        collate_fn=laser.collator(), callbacks=[AUCLog(laser, val, subset, args.eval_every, args.output_dir / "fit.jsonl")],
    )
    trainer.train()


if __name__ == "__main__":
    main()
