"""SCoRe: two-turn self-correction by multi-turn RL (Kumar et al., 2024, "Training Language Models to
Self-Correct via Reinforcement Learning").

An episode is ``x -> y1 ~ pi(.|x) -> y2 ~ pi(.|x, y1, "R:")`` (first attempt, then a revision) with
verifier rewards ``r1 = r(y1)``, ``r2 = r(y2)``. Both stages are on-policy REINFORCE against the
base model ``pi_ref``, as in the paper: the gradient of a sequence is ``-(R - b) grad log pi(y)``
(sum over the sequence's tokens) plus a per-token k3 estimate of ``KL(pi || pi_ref)``, with ``R`` the
return credited to that turn and ``b`` the mean return of the problem's ``samples_per_problem``
episodes (a baseline; no standard-deviation normalisation, no ratio clipping). It runs through
:class:`~selfgen.train.llm.objectives.GRPOObjective` with ``old_per_token_logps`` equal to the
current logprobs (ratio 1, so the clipped surrogate's gradient is exactly REINFORCE's) and the
``dr_grpo`` reduction (token sums over a constant ``max_new_tokens``). A round's steps may revisit a
rollout after earlier updates (no importance correction: slightly stale REINFORCE).

Per-turn returns (:func:`turn_returns`; the advantage of a turn's tokens is its return minus the
group mean, :func:`baseline_advantages`):

* **Stage I** (``stage1_iterations``, the paper's eq. 3) - maximise the second turn's reward while
  keeping the first turn close to the base model:
  ``max E_{y1 ~ pi, y2 ~ pi}[r2] - beta2 KL(pi(.|x) || pi_ref(.|x)) - beta1 KL(turn 2)``. Both turns
  are sampled from ``pi``, so both are credited with the return ``r2`` (REINFORCE of eq. 3); the
  first turn carries the strong KL weight ``beta2``, which keeps it near the base (this decouples the
  turns and avoids collapsing into "never change the answer").
* **Stage II** (eq. 4 with the shaping bonus) - jointly maximise ``r1 + r2`` with the bonus
  ``b = alpha (r2 - r1)`` on the second attempt only (:func:`shaped_reward`,
  ``r2_hat = r2 + alpha (r2 - r1)``: a bonus for incorrect -> correct, a penalty for correct ->
  incorrect). Turn 1 is credited with ``r1 + r2`` and turn 2 with ``r2_hat``: the bonus shapes the
  revision, never the first attempt, so a wrong first attempt is never rewarded over a right one
  (crediting turn 1 with ``r1 + r2_hat = (1 - alpha) r1 + (1 + alpha) r2`` would pay ``-9 r1`` at
  ``alpha = 10``, i.e. reward wrong first attempts; that was this module's earlier default).

**Turn-2 format** (the trainer's ``prompt_format``): ``arith`` appends the mark ``\\nR:\\n`` after the
first attempt; ``arith_restate`` / ``arith_swap`` / ``arith_hint`` append the mark and the question in a
prompt format the base was pretrained on (:class:`~selfgen.train.llm.prompts.RestatedRevisionFormat`).
Both are departures from the paper, whose turn 2 appends an instruction ("There might be an error in
the solution above ... correct the error, if any, and rewrite the solution"); our base has never seen
instructions. The rollouts, the evaluation and the warm start's revision examples all use the format.

Metrics, greedy on held-out problems: Accuracy@t1, Accuracy@t2, Delta(t1,t2) = Acc@t2 - Acc@t1,
Delta_i->c (fraction fixed by the revision) and Delta_c->i (fraction broken by it), and the CCT
decomposition (confidence level, critique score, RSS; :mod:`selfgen.eval.self_correction`), each
with its standard error over problems (``*_se``); with
``tune_problems`` the same on training-seed problems as ``tune_*`` (for choosing settings).
``stage2_learning_rate`` sets stage II's step size apart (its shaped returns are ~alpha x larger);
``stage2_beta_first`` (a departure, off by default) keeps a KL weight on the first turn in stage II
other than ``beta1`` (e.g. stage I's ``beta2``), to hold the first attempt near the base model
while the shaped bonus trains the revision.

**Warm start** (``warmup_problems`` > 0; a departure, the driver's ``seed_round``, iteration 0): the
paper starts from instruction-tuned models that already follow "here is your previous attempt,
correct it"; our pretrained base has only seen revisions that restate a *correct* first attempt, so
its second attempt re-solves from scratch and breaks more than it fixes. Before the RL stages the
model is fine-tuned (SFT, ``warmup_train_steps`` at ``warmup_learning_rate``) on its **own** T = 1
samples of ``warmup_problems`` training-seed problems, labelled by the same verifier as the rewards:
revision examples (:func:`revision_pairs`, Pair-SFT: a correct attempt followed by itself, a wrong
one followed by a correct sample of the same problem) plus, as turn-1 examples, the samples
themselves (a Monte-Carlo forward-KL anchor that holds the first attempt near the starting model;
``warmup_anchor_correct_only``: only the correct ones, i.e. rejection-sampling fine-tuning of turn
1). No reference solution is used. The warm-started model is then the KL reference ``pi_ref`` of
both RL stages.

**Likelihood-labelled warm start** (``warmup_keep_threshold`` = tau set; a second departure, labels from a
self-signal, no verifier in the warm start): the turn-2 targets follow the fixed keep-or-re-solve rule of
``benchmarks/llm_keep_signal.py`` instead of the verifier. Each warm-start problem gets the model's greedy
first attempt ``y1`` and, prompted afresh, its greedy solution ``y_swap`` of the swapped question ``b+a``
(:meth:`SCoReTrainer.keep_signal_attempts`); the revision target is ``y1`` (keep) when its mean token
log-probability under the model is >= tau, else ``y_swap`` (re-solve; :func:`likelihood_keep_pairs`), and
``warmup_anchor_correct_only`` then keeps as turn-1 examples the kept attempts instead of the correct ones.
tau is chosen beforehand on validation problems (training split), never on the test problems. One greedy
attempt per problem (the paper's Pair-SFT has no such rule; the rule is measured on greedy attempts).
Meant with ``prompt_format: arith_swap``, whose turn 2 restates the swapped question the re-solve answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.problems import Problem
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import GRPOCollator, GRPOObjective, PolicySample, SFTCollator, SFTObjective, TextPair
from .prompts import swapped_question
from .rollout import Rollout

WARMUP_SEED = 8_500  # the warm start's problems (training split)
TUNE_SEED = 9_000  # the tune_* problems (training split, never the held-out set)


@dataclass
class SCoReConfig(IterativeConfig):
    samples_per_problem: int = 4
    stage1_iterations: int = 1
    beta1: float = 0.01  # KL weight on every turn
    beta2: float = 0.1  # stage I: KL weight on the first turn
    alpha: float = 10.0  # stage II: reward-shaping multiplier
    learning_rate: float = 1e-4
    stage2_learning_rate: float | None = None  # stage II's rounds (None: learning_rate); shaped returns are ~alpha x larger
    stage2_beta_first: float | None = None  # stage II: KL weight on the first turn (None: beta1, as the paper)
    tune_problems: int = 0  # > 0: also report tune_* metrics on this many training-seed problems
    warmup_problems: int = 0  # > 0: Pair-SFT warm start of the revision turn on the model's own samples (departure)
    warmup_train_steps: int = 200
    warmup_learning_rate: float = 3e-4
    warmup_anchor_correct_only: bool = False  # the warm start's turn-1 examples: only its correct samples (else all)
    warmup_keep_threshold: float | None = None  # tau: label the warm start by the likelihood keep rule (departure)


def shaped_reward(r1: torch.Tensor, r2: torch.Tensor, alpha: float) -> torch.Tensor:
    """Stage II's turn-2 reward ``r2 + alpha (r2 - r1)``."""
    return r2 + alpha * (r2 - r1)


def turn_returns(r1: torch.Tensor, r2: torch.Tensor, stage: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The returns credited to turn 1 and turn 2: stage I ``(r2, r2)`` (eq. 3: only turn 2's reward is
    optimised, through both sampled turns); stage II ``(r1 + r2, r2 + alpha (r2 - r1))`` (eq. 4, the
    shaping bonus on the second attempt only)."""
    if stage == 1:
        return r2, r2
    if stage == 2:
        return r1 + r2, shaped_reward(r1, r2, alpha)
    raise ValueError(f"stage must be 1 or 2, got {stage}")


def baseline_advantages(returns: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE advantages: each return minus the mean return of its problem's ``group_size`` episodes."""
    grouped = returns.view(-1, group_size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)


def correction_metrics(first: list[bool], second: list[bool]) -> dict[str, float]:
    """SCoRe's self-correction metrics from per-problem correctness of turn 1 and turn 2."""
    n = len(first)
    t1, t2 = sum(first) / n, sum(second) / n
    return {
        "accuracy_t1": t1,
        "accuracy_t2": t2,
        "delta_t1_t2": t2 - t1,
        "delta_i_to_c": sum((not a) and b for a, b in zip(first, second)) / n,
        "delta_c_to_i": sum(a and (not b) for a, b in zip(first, second)) / n,
    }


def revision_pairs(contexts: list[list[str]], attempts: list[list[str]], verdicts: list[list[bool]]) -> list[TextPair]:
    """Pair-SFT revision examples from a model's own samples (``attempts[i]``: problem i's samples,
    ``verdicts[i]`` the verifier's, ``contexts[i][j]`` the turn-2 context of attempt j, i.e. the
    format's :meth:`~selfgen.train.llm.prompts.PromptFormat.revision`): a correct attempt is followed
    by itself (keep a right answer), a wrong one by a correct sample of the same problem (fix it);
    problems without a correct sample give nothing."""
    pairs = []
    for context, samples, correct in zip(contexts, attempts, verdicts, strict=True):
        right = [sample for sample, ok in zip(samples, correct) if ok]
        for index, (turn2, attempt, ok) in enumerate(zip(context, samples, correct, strict=True)):
            if right:
                target = attempt if ok else right[index % len(right)]
                pairs.append(TextPair(turn2, target))
    return pairs


def mean_logprob(rollout: Rollout) -> float:
    """The keep signal: the mean token log-probability of a finished completion under the model that wrote
    it (``-inf`` for an empty or unfinished one)."""
    return float(np.mean(rollout.logprobs)) if rollout.finished and rollout.logprobs else -float("inf")


def likelihood_keep_pairs(
    contexts: list[str], attempts: list[str], signals: list[float], resolves: list[str], threshold: float
) -> list[TextPair]:
    """Pair-SFT revision examples labelled by the likelihood keep rule (no verifier): after the turn-2
    context ``contexts[i]`` of attempt ``attempts[i]``, the attempt itself when ``signals[i] >= threshold``
    (keep), else the fresh re-solve ``resolves[i]`` (``None``: no finished re-solve, no example)."""
    pairs = []
    for context, attempt, signal, resolve in zip(contexts, attempts, signals, resolves, strict=True):
        target = attempt if signal >= threshold else resolve
        if target is not None:
            pairs.append(TextPair(context, target))
    return pairs


class SCoReTrainer(IterativeTrainer):
    config_class = SCoReConfig
    plot_keys = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference = frozen_copy(self.policy)

    def optimise(self, iteration: int, round_: Round) -> dict[str, float]:
        logs = super().optimise(iteration, round_)
        if iteration == 0:  # after the warm start: the RL stages' KL reference is the warm-started model
            self.reference = frozen_copy(self.policy)
        return logs

    def _resume(self) -> tuple[list[dict[str, float]], int]:
        history, done = super()._resume()
        if history and "seed_train_steps" in history[0]:
            self.reference = frozen_copy(self.load_model(self.iteration_dir(0) / "model")[0])
        return history, done

    def episodes(self, problems: list[Problem], **sampling) -> tuple[list[Rollout], list[Rollout]]:
        """First attempts (``num_samples`` per problem) and one plain revision of each (the shared
        multi-round sampler, :meth:`IterativeTrainer.revisions`, KV cache continued)."""
        episodes = self.revisions(problems, rounds=2, **sampling)
        return [e.turns[0].rollout for e in episodes], [e.turns[1].rollout for e in episodes]

    def evaluate(self) -> dict[str, float]:
        metrics = self.correction_eval(self.eval_set)
        if self.config.tune_problems:  # training-seed problems (never the held-out set), for choosing settings
            tune = self.task.sample(self.config.tune_problems, TUNE_SEED + self.config.seed)
            metrics.update({f"tune_{key}": value for key, value in self.correction_eval(tune).items()})
        return {"accuracy": metrics["accuracy_t2"], **metrics}

    def keep_signal_attempts(self, problems: list[Problem]) -> tuple[list[Rollout], list[Rollout]]:
        """Greedy first attempts of ``problems`` and greedy fresh solutions of their swapped questions."""
        def greedy(questions: list[str]) -> list[Rollout]:
            return self.sample([self.format.prompt(q) for q in questions], temperature=0.0, num_samples=1)

        return greedy([p.question for p in problems]), greedy([swapped_question(p.question) for p in problems])

    def seed_round(self) -> Round | None:
        """The optional warm start (``warmup_problems`` > 0; a departure, see the module docstring): SFT on
        revision pairs plus turn-1 examples, labelled by the verifier or (``warmup_keep_threshold``) by the
        likelihood keep rule."""
        config = self.config
        if not config.warmup_problems:
            return None
        problems = self.task.sample(config.warmup_problems, WARMUP_SEED + config.seed)
        build = self.verifier_warmup if config.warmup_keep_threshold is None else self.likelihood_warmup
        pairs, anchor, logs = build(problems)
        return Round(
            SFTObjective(), pairs + anchor, SFTCollator(self.tokenizer, config.max_length), logs,
            max_train_steps=config.warmup_train_steps, learning_rate=config.warmup_learning_rate,
        )

    def likelihood_warmup(self, problems: list[Problem]) -> tuple[list[TextPair], list[TextPair], dict[str, float]]:
        """:func:`likelihood_keep_pairs` of greedy attempts plus, as turn-1 examples, the attempts (only the
        kept ones with ``warmup_anchor_correct_only``). The verifier is read for the logs only."""
        config = self.config
        first, resolve = self.keep_signal_attempts(problems)
        signals = [mean_logprob(r) for r in first]
        kept = [s >= config.warmup_keep_threshold for s in signals]
        contexts = [self.format.revision(p.question, r.text) for p, r in zip(problems, first)]
        resolves = [r.text if r.finished else None for r in resolve]
        pairs = likelihood_keep_pairs(contexts, [r.text for r in first], signals, resolves, config.warmup_keep_threshold)
        anchor = [
            TextPair(self.prompt(p), r.text)
            for p, r, keep in zip(problems, first, kept)
            if keep or not config.warmup_anchor_correct_only
        ]
        right = [self.verify(p, r.text) for p, r in zip(problems, first)]
        targets = [self.verify(p, (r1 if keep else r2).text) for p, r1, r2, keep in zip(problems, first, resolve, kept)]
        logs = {
            "warmup_examples": float(len(pairs)), "warmup_anchor_examples": float(len(anchor)),
            "warmup_kept": float(np.mean(kept)), "warmup_attempt_accuracy": float(np.mean(right)),
            "warmup_target_accuracy": float(np.mean(targets)),
        }
        return pairs, anchor, logs

    def verifier_warmup(self, problems: list[Problem]) -> tuple[list[TextPair], list[TextPair], dict[str, float]]:
        """:func:`revision_pairs` of the model's own T = 1 samples plus those samples as turn-1 examples."""
        config, k = self.config, self.config.samples_per_problem
        texts = [r.text for r in self.solve(problems, seed=WARMUP_SEED)]
        attempts = [texts[i * k : (i + 1) * k] for i in range(len(problems))]
        verdicts = [[self.verify(p, t) for t in group] for p, group in zip(problems, attempts)]
        prompts = [self.prompt(p) for p in problems]
        contexts = [[self.format.revision(p.question, text) for text in group] for p, group in zip(problems, attempts)]
        pairs = revision_pairs(contexts, attempts, verdicts)
        anchor = [
            TextPair(prompt, text)
            for prompt, group, correct in zip(prompts, attempts, verdicts)
            for text, ok in zip(group, correct)
            if ok or not config.warmup_anchor_correct_only
        ]
        fixes = sum(not ok for group in verdicts if any(group) for ok in group)
        logs = {
            "warmup_examples": float(len(pairs)), "warmup_fix_examples": float(fixes),
            "warmup_anchor_examples": float(len(anchor)),
        }
        return pairs, anchor, logs

    def build_round(self, iteration: int) -> Round:
        config, k = self.config, self.config.samples_per_problem
        problems = self.problems(iteration)
        first, second = self.episodes(problems, seed=iteration)
        repeated = [p for p in problems for _ in range(k)]
        r1 = torch.tensor(self.verifier_rewards(repeated, [r.text for r in first]))
        r2 = torch.tensor(self.verifier_rewards(repeated, [r.text for r in second]))
        stage = 1 if iteration <= config.stage1_iterations else 2
        first_return, second_return = turn_returns(r1, r2, stage, config.alpha)
        first_advantages, second_advantages = baseline_advantages(first_return, k), baseline_advantages(second_return, k)
        if stage == 1:
            first_kl = config.beta2 / config.beta1
        else:
            first_kl = (config.beta1 if config.stage2_beta_first is None else config.stage2_beta_first) / config.beta1
        samples = [  # no old logprobs: the ratio is 1 and the update is REINFORCE's (see the docstring)
            PolicySample(r.prompt_ids, r.completion_ids, float(a), None, kl)
            for rollouts, advantages, kl in ((first, first_advantages, first_kl), (second, second_advantages, 1.0))
            for r, a in zip(rollouts, advantages)
        ]
        objective = GRPOObjective(
            self.reference, beta=config.beta1, loss_type="dr_grpo", max_completion_length=config.max_new_tokens,
            temperature=config.temperature,
        )
        sampled = correction_metrics(r1.bool().tolist(), r2.bool().tolist())
        logs = {"stage": float(stage), **{f"train_{key}": value for key, value in sampled.items()}}
        learning_rate = config.stage2_learning_rate if stage == 2 else None
        return Round(objective, samples, GRPOCollator(self.tokenizer.pad_token_id), logs, learning_rate=learning_rate)


METHOD = Method(
    name="score",
    summary="SCoRe: two-turn self-correction RL (stage I KL-constrained turn 1, stage II shaped joint reward)",
    config_class=SCoReConfig,
    train=run_recipe(SCoReTrainer),
)
