"""LaSeR: Reinforcement Learning with Last-Token Self-Rewarding (Yang et al. 2025, RUCBM/LaSeR).

The policy's own verification signal is one next-token probability: after a solution ``y`` (which
ends with eos), the **last-token self-rewarding score** is

    r_s(x, y) = beta_v * (log pi_theta(z_c | x, y) - c_ref)

for a pre-specified token ``z_c`` that never follows eos otherwise (here ``<unk>``), with ``c_ref``
a pre-calculated constant standing in for ``log pi_ref(z_c | x, y)`` (the reference model's value
is nearly constant across solutions; we measure it once, as the mean over the starting model's
own solutions of 16 training-seed problems, or take ``reference_logprob`` from the config).
Training adds to the GRPO loss (verifier rewards, :class:`~selfgen.train.llm.grpo.GRPOTrainer`) the
MSE that aligns the self-rewarding score with the verifier reward ``r_v in {0, 1}`` (eq. 12),

    L = L_GRPO + alpha * E[ w(r_v) * (r_s(x, y) - r_v(x, y))^2 ]

over finished solutions only (a truncated solution has no last token), with the paper's scaling
``beta_v = 0.1`` (``self_reward_kl_coef``), ``alpha = 0.1`` (``self_reward_loss_coef``) and class-level
re-weighting ``w`` that gives correct and incorrect finished solutions equal total weight over the whole
rollout batch of an iteration (``balanced``; as the official ``ray_trainer.py`` computes its
``reweighting_factor`` once per rollout batch, not per optimiser minibatch); the squared errors are
averaged over every row of the minibatch (truncated rows count with weight 0, as the official
``dp_actor.py`` takes the ``.mean()``). ``z_c`` is appended after each completion's eos in the batch with
completion mask 0, so one forward pass gives both the policy-gradient logprobs and ``log pi(z_c | x, y)``.

Schedule (the official scripts): ``reasoning_warmup_iterations`` iterations of plain GRPO before the MSE
is switched on (``reasoning_warmup_steps = 200`` there). ``self_reward_only`` drops the policy-gradient
and KL terms and trains the MSE alone on the verifier's labels: not a LaSeR run but the gate that shows
whether the last-token score can learn to separate right from wrong at all
(``benchmarks/llm_self_reward_fit.py``).

At test time ``r_s`` ranks ``best_of_n`` samples per held-out problem: ``evaluate`` reports the
accuracy of the highest-scored sample (``best_of_n_accuracy``) next to majority voting over the same
samples (``majority_vote_accuracy``) and a single sample (``sample_accuracy``), and how often
``r_s > 0.5`` agrees with the verifier (``self_verification_accuracy``, finished samples).

Departures: ``c_ref`` is measured on our model (the paper's -23 is for Qwen's vocabulary); the
paper's optional integration of self-rewarding advantages into the policy advantages starts after
hundreds of warm-up steps, beyond our budget, and is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...data.problems import Problem
from ...eval.scenes import ranking_auc
from ..registry import Method
from .driver import Round, run_recipe
from .grpo import GRPOConfig, GRPOTrainer, repeat_per_rollout
from .lm import EVAL_SEED
from .objectives import GRPOCollator, GRPOObjective, PolicySample
from .rewards import canonical_answer, majority_answer
from .rollout import Rollout

CALIBRATION_SEED = 9_500  # the calibration problems' seed (training split)
CALIBRATION_PROBLEMS = 16


@dataclass
class LaSeRConfig(GRPOConfig):
    self_reward_token: str = "<unk>"  # z_c: a token the model never emits after eos
    self_reward_kl_coef: float = 0.1  # beta_v
    self_reward_loss_coef: float = 0.1  # alpha
    reference_logprob: float | None = None  # c_ref; None: measured on the starting model (see the docstring)
    balanced: bool = True  # class-level re-weighting of the MSE over the rollout batch (correct vs incorrect)
    reasoning_warmup_iterations: int = 0  # plain GRPO iterations before the MSE is on (official: 200 steps)
    self_reward_only: bool = False  # train the MSE alone (no policy gradient, no KL): the learnability gate
    best_of_n: int = 4  # samples per held-out problem for best-of-N vs majority vote (0: skip)
    best_of_n_problems: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.self_reward_kl_coef <= 0:
            raise ValueError(f"self_reward_kl_coef (beta_v) must be > 0, got {self.self_reward_kl_coef}")
        if self.self_reward_loss_coef < 0:
            raise ValueError(f"self_reward_loss_coef (alpha) must be >= 0, got {self.self_reward_loss_coef}")
        if self.reasoning_warmup_iterations < 0:
            raise ValueError(f"reasoning_warmup_iterations must be >= 0, got {self.reasoning_warmup_iterations}")
        if self.self_reward_only and self.self_reward_loss_coef == 0:
            raise ValueError("self_reward_only needs self_reward_loss_coef (alpha) > 0: nothing would be trained")
        if self.best_of_n < 0 or self.best_of_n == 1:
            raise ValueError(f"best_of_n must be 0 (skip) or >= 2, got {self.best_of_n}")


class LastTokenCollator(GRPOCollator):
    """A :class:`GRPOCollator` batch with ``z_c`` written one position after each completion (mask 0)
    and ``self_reward_index`` holding that position (scored through ``score_mask``)."""

    def __init__(self, pad_token_id: int, self_reward_token_id: int) -> None:
        super().__init__(pad_token_id)
        self.self_reward_token_id = self_reward_token_id

    def __call__(self, samples: Sequence[PolicySample]) -> dict[str, torch.Tensor]:
        batch = super().__call__(samples)
        rows = len(samples)
        for key, value in (("completion_ids", self.pad_token_id), ("completion_mask", 0), ("old_per_token_logps", 0.0)):
            if key in batch:
                column = torch.full((rows, 1), value, dtype=batch[key].dtype)
                batch[key] = torch.cat([batch[key], column], dim=1)
        index = torch.tensor([len(s.completion_ids) for s in samples])
        batch["completion_ids"][torch.arange(rows), index] = self.self_reward_token_id
        batch["self_reward_index"] = index
        batch["score_mask"] = batch["completion_mask"].clone()
        batch["score_mask"][torch.arange(rows), index] = 1  # z_c is scored, never trained on as a completion token
        return batch


def last_token_logprob(logprobs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``log pi(z_c | x, y)`` of each row from the completion logprobs of a :class:`LastTokenCollator` batch."""
    return logprobs[torch.arange(logprobs.shape[0]), batch["self_reward_index"]]


def balanced_weights(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample weights giving the correct (``r > 0.5``) and incorrect masked samples equal total
    weight, ``n / (2 n_class)``; 1 when only one class is present; 0 where ``mask`` is 0."""
    correct = (rewards > 0.5) & mask.bool()
    wrong = (rewards <= 0.5) & mask.bool()
    total, n_correct, n_wrong = mask.sum(), correct.sum(), wrong.sum()
    if n_correct == 0 or n_wrong == 0:
        return mask.float()
    return correct.float() * total / (2 * n_correct) + wrong.float() * total / (2 * n_wrong)


class LaSeRObjective(GRPOObjective):
    """GRPO loss + ``alpha`` x the weighted MSE between ``r_s`` and the verifier reward (eq. 12); the
    weights are the batch's ``self_reward_weight`` (class re-weighting over the rollout batch, 0 for
    truncated rows). ``self_reward_only`` drops the GRPO loss (the learnability gate)."""

    def __init__(
        self, *args, beta_v: float, alpha: float, reference_logprob: float, self_reward_only: bool = False, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.beta_v, self.alpha, self.reference_logprob = beta_v, alpha, reference_logprob
        self.self_reward_only = self_reward_only

    def self_reward(self, logprobs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``r_s = beta_v (log pi(z_c | x, y) - c_ref)`` from a :class:`LastTokenCollator` batch's logprobs
        (scaled back by the temperature, as the reference implementation does)."""
        return self.beta_v * (last_token_logprob(logprobs, batch) * self.temperature - self.reference_logprob)

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = self.completion_logprobs(model, batch)
        loss, logs = (logprobs.new_zeros(()), {}) if self.self_reward_only else self.policy_loss(logprobs, batch)
        if not self.alpha:
            return loss, logs
        self_reward = self.self_reward(logprobs, batch)
        verifier, finished = batch["verifier_reward"], batch["finished"]
        mse = (batch["self_reward_weight"] * (self_reward - verifier) ** 2).mean()
        agree = (((self_reward.detach() > 0.5) == (verifier > 0.5)).float() * finished).sum() / finished.sum().clamp(min=1.0)
        logs.update({"self_reward_mse": float(mse.detach()), "self_verification_accuracy": float(agree)})
        return loss + self.alpha * mse, logs


class LaSeRTrainer(GRPOTrainer):
    config_class = LaSeRConfig
    plot_keys = ("accuracy", "best_of_n_accuracy", "majority_vote_accuracy", "self_verification_accuracy", "train_accuracy")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        token = self.config.self_reward_token
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            raise ValueError(f"self_reward_token={token!r} is not a single token of the model's vocabulary")
        self.self_reward_token_id = token_id
        self.reference_logprob = self.config.reference_logprob
        if self.reference_logprob is None:
            self.reference_logprob = self.measure_reference_logprob()

    def policy_sample(self, rollout: Rollout, advantage: float, reward: float) -> PolicySample:
        extras = {"verifier_reward": reward, "finished": float(rollout.finished), "self_reward_weight": float(rollout.finished)}
        return PolicySample(rollout.prompt_ids, rollout.completion_ids, advantage, rollout.logprobs, extras=extras)

    def weigh_samples(self, samples: Sequence[PolicySample]) -> None:
        """Set each sample's ``self_reward_weight`` from the whole rollout batch: :func:`balanced_weights`
        (``balanced``) or 1 per finished sample, 0 per truncated one."""
        verifier = torch.tensor([s.extras["verifier_reward"] for s in samples])
        finished = torch.tensor([s.extras["finished"] for s in samples])
        weights = balanced_weights(verifier, finished) if self.config.balanced else finished
        for sample, weight in zip(samples, weights.tolist()):
            sample.extras["self_reward_weight"] = weight

    def build_round(self, iteration: int) -> Round:
        round_ = super().build_round(iteration)
        self.weigh_samples(round_.dataset)
        if iteration <= self.config.reasoning_warmup_iterations:
            round_.objective = self.objective(alpha=0.0)
        return round_

    def collator(self) -> LastTokenCollator:
        return LastTokenCollator(self.tokenizer.pad_token_id, self.self_reward_token_id)

    def objective(self, alpha: float | None = None) -> LaSeRObjective:
        """The LaSeR loss; ``alpha`` overrides ``self_reward_loss_coef`` (0 during the reasoning warm-up)."""
        config = self.config
        options = {**self.objective_options(), "max_completion_length": config.max_new_tokens + 1}  # + z_c
        return LaSeRObjective(
            self.reference, **options, beta_v=config.self_reward_kl_coef,
            alpha=config.self_reward_loss_coef if alpha is None else alpha,
            reference_logprob=self.reference_logprob or 0.0, self_reward_only=config.self_reward_only,
        )

    # ----------------------------------------------------------------- scores

    @torch.no_grad()
    def self_reward_scores(self, model: nn.Module, rollouts: list[Rollout], batch_size: int = 128) -> torch.Tensor:
        """``r_s`` of each rollout under ``model`` (one forward pass per batch; ``c_ref = 0`` while it
        is being measured)."""
        objective, collate = self.objective(), self.collator()
        scores = []
        for start in range(0, len(rollouts), batch_size):
            chunk = rollouts[start : start + batch_size]
            batch = collate([PolicySample(r.prompt_ids, r.completion_ids, 0.0) for r in chunk])
            scores.append(objective.self_reward(objective.completion_logprobs(model.eval(), batch), batch))
        return torch.cat(scores)

    def self_rewards(self, rollouts: list[Rollout]) -> torch.Tensor:
        """``r_s`` of each rollout under the current policy; ``-inf`` for unfinished ones (no last token)."""
        scores = self.self_reward_scores(self.policy, rollouts)
        finished = torch.tensor([r.finished for r in rollouts])
        return torch.where(finished, scores, torch.full_like(scores, -float("inf")))

    def measure_reference_logprob(self) -> float:
        """``c_ref``: the mean ``log pi_ref(z_c | x, y)`` of the starting model over its own finished
        solutions of ``CALIBRATION_PROBLEMS`` training-seed problems."""
        problems = self.task.sample(CALIBRATION_PROBLEMS, CALIBRATION_SEED + self.config.seed)
        rollouts = self.solve(problems, seed=CALIBRATION_SEED)
        finished = [r for r in rollouts if r.finished] or rollouts
        scores = self.self_reward_scores(self.reference or self.policy, finished)  # beta_v * log pi_ref(z_c|x,y)
        return float(scores.mean()) / self.config.self_reward_kl_coef

    def rollout_logs(self, problems: list[Problem], rollouts: list[Rollout], rewards: list[float]) -> dict[str, float]:
        return {**super().rollout_logs(problems, rollouts, rewards), "reference_logprob": self.reference_logprob}

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        if self.config.best_of_n:
            metrics.update(self.best_of_n_metrics(self.eval_set[: self.config.best_of_n_problems]))
        return metrics

    def best_of_n_table(self, problems: list[Problem], seed: int = EVAL_SEED) -> dict[str, np.ndarray]:
        """Per problem, on the same ``best_of_n`` samples at temperature 1: whether the highest-``r_s`` sample
        (``best``), the sample of highest mean token log-probability (``confident``: the policy's own
        likelihood, an untrained comparison), the majority answer (``vote``), the first sample (``sample``)
        and any sample (``oracle``) is right; per sample, ``r_s`` (``scores``; ``-inf`` when unfinished), the
        mean token log-probability (``confidence``; ``-inf`` when unfinished), the verdict (``correct``) and
        its problem's index (``problem``) - the paired inputs of ``benchmarks/llm_self_reward.py``."""
        n = self.config.best_of_n
        rollouts = self.solve(problems, temperature=1.0, num_samples=n, seed=seed)
        repeated = repeat_per_rollout(problems, len(rollouts))
        correct = np.array([self.verify(p, r.text) for p, r in zip(repeated, rollouts)])
        scores = self.self_rewards(rollouts).numpy()
        confidence = np.array([np.mean(r.logprobs) if r.finished and r.logprobs else -np.inf for r in rollouts])
        best, confident, vote = [], [], []
        for index, problem in enumerate(problems):
            group = slice(index * n, (index + 1) * n)
            best.append(correct[group][int(scores[group].argmax())])
            confident.append(correct[group][int(confidence[group].argmax())])
            vote.append(majority_answer([self.answer_key(r.text) for r in rollouts[group]]) == canonical_answer(problem.answer))
        grouped = correct.reshape(len(problems), n)
        return {
            "best": np.array(best), "confident": np.array(confident), "vote": np.array(vote), "sample": grouped[:, 0],
            "oracle": grouped.any(1), "scores": scores, "confidence": confidence, "correct": correct,
            "problem": np.repeat(np.arange(len(problems)), n),
        }

    def best_of_n_metrics(self, problems: list[Problem]) -> dict[str, float]:
        """Best-of-N by ``r_s`` vs majority vote vs one sample on the same samples (:meth:`best_of_n_table`),
        how often ``r_s > 0.5`` agrees with the verifier, and ``r_s``'s AUC at telling right from wrong
        finished samples (:func:`self_reward_aucs`)."""
        table = self.best_of_n_table(problems)
        scores, correct = table["scores"], table["correct"]
        finished = np.isfinite(scores)
        agree = ((scores > 0.5) == correct) & finished
        return {
            "best_of_n_accuracy": float(table["best"].mean()),
            "majority_vote_accuracy": float(table["vote"].mean()),
            "sample_accuracy": float(correct.mean()),
            "self_verification_accuracy": float(agree.sum() / max(finished.sum(), 1)),
            **self_reward_aucs(scores, correct, table["problem"]),
        }


def self_reward_aucs(scores: np.ndarray, correct: np.ndarray, problem: np.ndarray) -> dict[str, float]:
    """``self_reward_auc``: P(r_s of a right finished sample > r_s of a wrong one) over all finished samples
    (ties half; 0.5 = chance); ``within_problem_auc``: the same over pairs from one problem only, averaged
    over the problems that have both (what best-of-N needs: it only compares samples of one question)."""
    finished = np.isfinite(scores)
    scores, correct, problem = scores[finished], correct[finished].astype(bool), problem[finished]
    within = [ranking_auc(scores[problem == p], correct[problem == p]) for p in np.unique(problem)]
    within = [auc for auc in within if not np.isnan(auc)]
    return {
        "self_reward_auc": ranking_auc(scores, correct),
        "within_problem_auc": float(np.mean(within)) if within else float("nan"),
    }


METHOD = Method(
    name="laser",
    summary="LaSeR: GRPO + an MSE aligning the last-token self-reward log pi(z_c|x,y) with the verifier; best-of-N by it",
    config_class=LaSeRConfig,
    train=run_recipe(LaSeRTrainer),
)
