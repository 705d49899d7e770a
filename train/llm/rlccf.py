"""RLCCF: Reinforcement Learning from Coevolutionary Collective Feedback (Yuan et al. 2025, "Wisdom of
the Crowd: Reinforcement Learning from Coevolutionary Collective Feedback").

A collective of ``M`` models answers every training question, each with a group of ``G`` rollouts.
Model ``m``'s **self-consistency** on the question is the share of its rollouts that give its own
majority answer, ``SC_m = max_a (1/G) sum_i 1[a_{m,i} = a]``. The **collective answer** is the vote
weighted by self-consistency,

    a* = argmax_a  sum_m SC_m * (1/G) sum_i 1[a_{m,i} = a]

(:func:`collective_vote`), and every rollout of every model is rewarded by agreement with it,
``r_{m,i} = 1[a_{m,i} = a*]`` (maximising the collective consistency). Each model is then updated by
GRPO on its own rollouts (:class:`~selfgen.train.llm.grpo.GRPOTrainer`'s round, its own reference
model), so all ``M`` models coevolve. No ground truth is used; the verifier only reports
diagnostics (``collective_label_accuracy``: how often ``a*`` is the true answer).

Evaluation: ``accuracy`` is the mean held-out greedy accuracy of the members, ``accuracy_m{k}`` each
member's, ``vote_accuracy`` the accuracy of the plurality of the members' greedy answers (ties go
to the lowest-index member).

Members: member 0 is the ``model`` passed to the trainer (a folder or an ``nn.Module`` with its
tokenizer; ``models[0]`` when only ``config.models`` is given), the others are ``models[1:]`` (folders)
or, without ``models``, ``num_models - 1`` copies of member 0 - never ``config.model`` behind the
caller's back. Members differ by their seeds - ``member_seeds[m]`` (default: derived from ``(seed,
m)``), from which member ``m``'s sampling seed and its GRPO update's seed (minibatch order, dropout)
of every iteration are derived (:meth:`RLCCFTrainer.member_seed`; before issue #18 every member's
update used the same seed and data order) - and, when given different folders (``models``, e.g. LMs
pretrained with other seeds or widths by ``selfgen train lm``), by weights, architecture or size.

Departure: the paper's collective is four different open LLMs; copies of one model (no ``models``)
start with identical answer distributions, so their votes begin correlated: only the seeds make them
diverge. ``configs/rlccf_arith_llama_hetero.yaml`` uses the two different bundled LMs instead
(``assets/lm-arith-llama``, ``assets/lm-arith``: other width, data and seed, one tokenizer);
:func:`collective_signal` measures before a run how often a collective's vote is right.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ...data.problems import Problem
from ...data.tasks import derive_seed
from ..registry import Method
from ..trainer import save_atomically
from .driver import IterationReport, Round, run_recipe
from .grpo import GRPOConfig, GRPOTrainer
from .modeling import frozen_copy, tokenizer_exporter
from .objectives import advantage_alignment
from .rewards import canonical_answer, majority_answer
from .rollout import Rollout


@dataclass
class RLCCFConfig(GRPOConfig):
    models: list[str] = field(default_factory=list)  # the collective's folders, member 0 first; empty: num_models copies of the model
    num_models: int = 3
    member_seeds: list[int] = field(default_factory=list)  # one per member (sampling and update seeds); empty: derived from seed

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.models and self.num_models < 2:
            raise ValueError(f"num_models must be >= 2 for a collective (or list >= 2 models), got {self.num_models}")
        if self.models and len(self.models) < 2:
            raise ValueError(f"models must list at least 2 model folders for a collective, got {self.models}")
        size = len(self.models) or self.num_models
        if self.member_seeds and (len(self.member_seeds) != size or len(set(self.member_seeds)) != size):
            raise ValueError(f"member_seeds must list {size} distinct seeds (one per member), got {self.member_seeds}")



def self_consistency(keys: list[str | None]) -> float:
    """The share of a model's rollouts that give its most common answer (0 without any answer)."""
    counts = Counter(key for key in keys if key is not None)
    return counts.most_common(1)[0][1] / len(keys) if counts else 0.0


def collective_vote(member_keys: list[list[str | None]]) -> tuple[str | None, list[float]]:
    """The self-consistency-weighted vote of the members on one question: ``(a*, [SC_m])``.

    ``member_keys[m]`` holds member ``m``'s answers (``None``: no answer); each member's answer
    frequencies are weighted by its ``SC_m``; ties go to the answer seen first."""
    weights = [self_consistency(keys) for keys in member_keys]
    scores: dict[str, float] = {}
    for weight, keys in zip(weights, member_keys):
        for key in keys:
            if key is not None:
                scores[key] = scores.get(key, 0.0) + weight / len(keys)
    best = max(scores.values(), default=0.0)
    winner = next((key for key, score in scores.items() if score == best), None) if best > 0 else None
    return winner, weights


def collective_signal(member_groups: list[list[list[str | None]]], truths: list[str | None]) -> dict[str, float]:
    """How much RLCCF's label-free reward tells about correctness, from answer keys alone (no model).

    ``member_groups[m][i]`` holds member ``m``'s answers to question ``i`` (one GRPO group each, the same
    size for every member and question), ``truths[i]`` its reference answer. Returned:
    ``collective_label_accuracy`` (how often the :func:`collective_vote` is right), ``majorities_agree`` (every
    member's own majority answer is the same: how correlated the members are) and, per member ``m``,
    ``pass_at_1_m{m}``, ``majority_at_k_m{m}`` (its own majority is right), ``alignment_m{m}``
    (:func:`~selfgen.train.llm.objectives.advantage_alignment` of its collective-agreement rewards with
    the verifier's: the share of verifier GRPO's signal that member's RLCCF update keeps) and
    ``reward_precision_m{m}`` (the share of its rewarded rollouts that are right; the verifier's is 1)."""
    if not truths or any(len(groups) != len(truths) for groups in member_groups) or len(member_groups) < 1:
        raise ValueError(f"collective_signal needs one group per question for every member, got "
                         f"{[len(groups) for groups in member_groups]} groups for {len(truths)} truths")
    size = len(member_groups[0][0])
    if any(len(group) != size for groups in member_groups for group in groups):
        raise ValueError("every member's group must have the same number of rollouts (the GRPO group size)")
    winners = [collective_vote([groups[i] for groups in member_groups])[0] for i in range(len(truths))]
    majorities = [[majority_answer(group) for group in groups] for groups in member_groups]
    result = {
        "collective_label_accuracy": sum(w is not None and w == t for w, t in zip(winners, truths)) / len(truths),
        "majorities_agree": sum(len(set(column)) == 1 and column[0] is not None for column in zip(*majorities)) / len(truths),
    }
    for m, groups in enumerate(member_groups):
        verifier = torch.tensor([[float(k is not None and k == t) for k in group] for group, t in zip(groups, truths)])
        agree = torch.tensor([[float(k is not None and k == w) for k in group] for group, w in zip(groups, winners)])
        result[f"pass_at_1_m{m}"] = float(verifier.mean())
        result[f"majority_at_k_m{m}"] = sum(a is not None and a == t for a, t in zip(majorities[m], truths)) / len(truths)
        result[f"alignment_m{m}"] = advantage_alignment(agree.reshape(-1), verifier.reshape(-1), size)
        result[f"reward_precision_m{m}"] = float((agree * verifier).sum() / agree.sum()) if agree.sum() else float("nan")
    return result


class RLCCFTrainer(GRPOTrainer):
    """``M`` policies; member 0 is the driver's ``policy``, the others live in ``members``."""

    config_class = RLCCFConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "vote_accuracy", "train_accuracy", "reward_agreement", "collective_label_accuracy")

    def __init__(self, model=None, task=None, config: RLCCFConfig | None = None, tokenizer=None, **kwargs) -> None:
        config = config or self.config_class()
        if config.models and model is not None and str(model) != str(config.models[0]):
            raise ValueError(
                f"model={model!r} and config.models={config.models} disagree on member 0: pass the collective "
                "either as config.models (member 0 first) or as model= with num_models copies"
            )
        model = config.models[0] if config.models else model
        super().__init__(model, task, config, tokenizer, **kwargs)
        self.members = [(self.policy, self.tokenizer, self.reference)]
        for path in self.config.models[1:] or [None] * (self.config.num_models - 1):
            policy, tokenizer = self.load_model(path) if path is not None else (copy.deepcopy(self.policy), self.tokenizer)
            self.members.append((policy, tokenizer, frozen_copy(policy) if self.config.beta else None))
        self.current = 0
        self.member_rounds: list[Round] = []

    # ----------------------------------------------------------------- members

    def use_member(self, index: int) -> None:
        """Make member ``index`` the driver's policy (after storing the current one back)."""
        self.members[self.current] = (self.policy, self.tokenizer, self.reference)
        self.policy, self.tokenizer, self.reference = self.members[index]
        self.current = index

    def iteration_dir(self, iteration: int) -> Path:
        return super().iteration_dir(iteration) / f"member-{self.current}"

    def _resume(self):
        history, done = super()._resume()  # loads member 0
        if done:
            for index in range(1, len(self.members)):
                self.use_member(index)
                self.policy, self.tokenizer = self.load_model(self.iteration_dir(done) / "model")
            self.use_member(0)
        return history, done

    def member_seed(self, member: int, iteration: int, purpose: str) -> int:
        """Member ``member``'s seed of ``purpose`` (``"sample"`` or ``"update"``) in ``iteration``."""
        base = self.config.member_seeds[member] if self.config.member_seeds else derive_seed(self.config.seed, "member", member)
        return derive_seed(base, iteration, purpose) % 2**31

    # ----------------------------------------------------------------- the round

    def collective_rewards(self, problems: list[Problem], member_rollouts: list[list[Rollout]]) -> list[list[float]]:
        """Each member's rewards: agreement of each rollout with the question's collective answer."""
        size = len(member_rollouts[0]) // len(problems)
        keys = [[self.answer_key(r.text) for r in rollouts] for rollouts in member_rollouts]
        rewards: list[list[float]] = [[] for _ in member_rollouts]
        labels_right, consistency = 0, 0.0
        for index, problem in enumerate(problems):
            group_keys = [member[index * size : (index + 1) * size] for member in keys]
            winner, weights = collective_vote(group_keys)
            for member, member_keys in enumerate(group_keys):
                rewards[member] += [float(key is not None and key == winner) for key in member_keys]
            labels_right += winner is not None and winner == canonical_answer(problem.answer)
            consistency += sum(weights) / len(weights)
        self.collective_logs = {
            "collective_label_accuracy": labels_right / len(problems),
            "self_consistency": consistency / len(problems),
        }
        return rewards

    def build_round(self, iteration: int) -> Round:
        problems = self.problems(iteration)
        member_rollouts = []
        for index in range(len(self.members)):
            self.use_member(index)
            member_rollouts.append(self.solve(problems, seed=self.member_seed(index, iteration, "sample")))
        member_rewards = self.collective_rewards(problems, member_rollouts)
        self.member_rounds = []
        for index, (rollouts, rewards) in enumerate(zip(member_rollouts, member_rewards)):
            self.use_member(index)
            self.member_rounds.append(replace(self.grpo_round(problems, rollouts, rewards), seed=self.member_seed(index, iteration, "update")))
        self.use_member(0)
        logs = {
            key: sum(r.logs[key] for r in self.member_rounds) / len(self.member_rounds)
            for key in self.member_rounds[0].logs
        }
        return Round(self.member_rounds[0].objective, [], None, {**logs, **self.collective_logs})

    def optimise(self, iteration: int, round_: Round) -> dict[str, float]:
        """One GRPO run per member, each on its own rollouts; logs are averaged over members."""
        member_logs = []
        for index, member_round in enumerate(self.member_rounds):
            self.use_member(index)
            member_logs.append(super().optimise(iteration, member_round))
        self.use_member(0)
        logs = {key: sum(log[key] for log in member_logs) / len(member_logs) for key in member_logs[0]}
        return {**logs, **{f"train_loss_m{k}": log.get("train_loss", float("nan")) for k, log in enumerate(member_logs)}}

    # ----------------------------------------------------------------- evaluation and export

    def evaluate(self) -> dict[str, float]:
        metrics, answers = {}, []
        for index in range(len(self.members)):
            self.use_member(index)
            rollouts = self.solve(self.eval_set, temperature=0.0, num_samples=1)
            answers.append([self.answer_key(r.text) for r in rollouts])
            correct = [self.verify(p, r.text) for p, r in zip(self.eval_set, rollouts)]
            metrics[f"accuracy_m{index}"] = sum(correct) / len(correct)
        self.use_member(0)
        truths = [canonical_answer(p.answer) for p in self.eval_set]
        votes = [majority_answer(list(column)) for column in zip(*answers)]
        metrics["vote_accuracy"] = sum(a == t for a, t in zip(votes, truths)) / len(truths)
        metrics["accuracy"] = sum(metrics[f"accuracy_m{k}"] for k in range(len(self.members))) / len(self.members)
        return metrics

    def train(self) -> IterationReport:
        """The driver's loop; member 0 is exported to ``pipeline_dir``, member k next to it (``<pipeline_dir>-member-k``)."""
        report = super().train()
        for index in range(1, len(self.members)):
            policy, tokenizer, _ = self.members[index]
            export = tokenizer_exporter(tokenizer)
            target = self.config.pipeline_dir.parent / f"{self.config.pipeline_dir.name}-member-{index}"
            save_atomically(lambda directory, p=policy, e=export: e(p, directory), target)
        return report


METHOD = Method(
    name="rlccf",
    summary="RLCCF: several LMs vote (weighted by self-consistency) on each answer; all are updated by GRPO",
    config_class=RLCCFConfig,
    train=run_recipe(RLCCFTrainer),
)
