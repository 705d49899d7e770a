"""ReST-MCTS* (Zhang et al., NeurIPS 2024, "ReST-MCTS*: LLM Self-Training via Process Reward Guided
Tree Search"; THUDM/ReST-MCTS).

A state is a partial solution (:func:`~selfgen.data.reasoning.partial_solution`), an action one
``S:`` step (the last step carries the ``A:`` line and ends the solution). A **value model**
``V_theta`` - here a second tiny LM with a scalar head (``AutoModelForSequenceClassification``,
``num_labels=1``, started from the same checkpoint as the policy), ``V = sigmoid(logit)`` - scores
partial solutions. Each iteration:

1. **MCTS*** on every training problem (all trees advance in lockstep so that each phase is one
   batched ``generate`` or forward pass), ``num_rollouts`` times:
   *selection* from the root by ``UCT(c) = V_c + c_puct sqrt(2 ln n_parent / n_c)``, an unvisited
   child scoring ``V_c + unvisited_bonus`` (1.0, the official code's ``INF``: a promising unvisited
   child is tried first, a low-valued one may lose to a visited sibling); *expansion* of the selected
   leaf by ``branch`` sampled next steps, each new child valued ``V_theta(child)``; *simulation* from
   the child with the best UCT (among the new, unvisited children: the highest-valued) by the official
   code's value-greedy roll-forward: at most ``roll_forward_steps`` times, sample ``roll_branch`` next
   steps, value each and keep the highest-valued, stopping at a terminal step;
   ``best = max_k V_theta(rollout prefix_k)`` and ``V_child <- (1 - alpha) V_child + alpha best``;
   *backup* along the path, ``n_c <- n_c + 1`` and ``V_c <- sum_i n_i V_i / sum_i n_i`` over
   the visited children (:func:`backup`). At test time the search stops early once the selected leaf
   is a terminal state with ``V >= end_gate``, and the answer is a complete solution found, picked by
   ``answer`` (:meth:`ReSTMCTSTrainer.answers`: the search's recorded value, ``V_theta`` of the complete
   solution, or the official ``root.getBestV()`` over complete tree nodes).
2. **Value inference** (:func:`infer_values`): with the oracle final answer, every prefix of every
   complete trace found (tree paths and simulations) gets a step reward ``r_k = 0`` if some correct
   trace passes through it, else 1, and a reasoning distance ``m_k`` (the fewest further steps to a
   correct end when ``r_k = 0``, else to any end), and the quality value of the paper's eqs. (1)-(2)

       w_k = (1 - v_{k-1}) / (m_k + 1) * (1 - 2 r_k),        v_k = max(v_{k-1} + w_k, 0),  v_0 = 0,

   so a correct trace of K steps climbs linearly to ``v_K = 1`` and a wrong step pulls the value down.
3. **Self-training of both models**: the value model regresses ``(V_theta(p_k) - v_k)^2`` on all
   inferred targets (one shared-``Trainer`` run, :class:`ValueRegressionObjective`), and the policy is
   fine-tuned (SFT) on the distinct correct traces, at most ``max_traces_per_problem`` per problem,
   highest quality first (sorted by the value the search gave the trace: ``V_theta`` of a tree
   terminal, the roll-forward's ``best`` for a simulation; ties: fewer steps first).

0. **The value model's seed data D_V0** (``value_warmup_*``, before the first search; the paper fits its
   PRM on seed data before self-training starts): ``value_warmup_problems`` training-split problems, each
   with its worked solution (a correct trace) and ``value_warmup_samples`` policy samples judged by the
   verifier, every prefix valued by the same inference (:meth:`ReSTMCTSTrainer.seed_value_examples`);
   ``V_theta`` regresses them for ``value_warmup_steps``. Without it (the default, and the runs before
   issue #18's pass 6) iteration 1's search is guided by a random head, and 60 steps of regression on
   the inferred targets left ``V_theta`` nearly constant (std 0.045 over held-out states, ranking AUC
   0.50 on partial solutions, 0.56 on complete ones).

**A generative process value** (``value_kind: critic``, test-time only; our departure, issue #18 pass 8):
instead of the scalar head, a step critic - the SPC warm-up's model (``configs/spc_arith_llama.yaml``,
iteration 0), which writes ``D:<re-derived step> vs <judged result>`` - values a state by its steps:
``p_k = P_critic("D:<step_k> vs " | question, steps_<k, "C:" step_k)`` teacher-forced (the probability
that it re-derives exactly the step taken), ``V = prod_k p_k`` (``value_aggregate: product``) or
``min_k p_k`` (:class:`StepCriticValue`). The answer line of a complete solution is not judged. Why:
the scalar head ranks states at chance (validation AUC 0.49 / 0.48 on partial / complete solutions,
session 34) while this critic re-derives steps (SPC step F1 0.86). ``V`` falls along a path where the
paper's ``v_k`` climbs to 1, so ``answer: search`` (the highest value along a roll-forward) scores a
roll-forward by its first steps; ``terminal`` judges the complete solution. The recipe's value update
regresses a scalar head, so training with ``value_kind: critic`` is refused.

**Matched control** (``ground_truth_control_of: <a ReST-MCTS* run>``, not in the paper): the same loop
and draws, but the policy is fine-tuned on the worked solutions of as many problems as that run kept
traces in each iteration, for the same steps, with no search and no value model
(:meth:`ReSTMCTSTrainer.control_round`).

Departures: the value model is a 3.2 M-parameter LM (the paper's is a 6B PRM) started from the
policy's weights with a fresh scalar head; our D_V0 is the worked solutions plus the policy's own
samples of the seed problems, labelled by the same inference (how the paper builds its D_V0 is not reproduced);
``roll_forward_steps`` defaults to 8 (official default 3) so that a
roll-forward usually reaches an answer on 3-5 digit addition, and the complete solutions of
roll-forwards join the traces used for value inference and (``answer`` ``search``/``terminal``; the
official code answers from tree nodes only: ``tree``) the candidate answers; the official expansion
temperature is 0.7 (``step_temperature`` 1.0 in the configs), its c 0.4 and 100 MCTS iterations; UCT ties go to the
first child (official: a random one); no self-critic/reflection step (a state is terminal when it has an
``A:`` line); prefixes that no complete trace passes through get no target.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from ...data.problems import Problem
from ...data.reasoning import (
    COMPARISON_MARK, DERIVATION_MARK, Action, corrupt_step, critic_prompt, labelled_solutions, parse_action, partial_solution,
    trace_text,
)
from ...data.tasks import ArithmeticTask, completion_text, derive_seed, extract_answer, prompt_text, solution_steps
from ...eval.scenes import ranking_auc
from ..registry import Method
from ..trainer import Objective, Trainer
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .lm import EVAL_SEED
from .objectives import (
    SFTCollator, SFTObjective, TextPair, completion_token_logprobs, pad_sequences, position_ids_from_mask, sequence_batch,
    split_continuation,
)
from .rollout import Rollout, SamplingParams

logger = logging.getLogger("selfgen.train.llm")


ANSWER_RULES = ("search", "terminal", "tree")  # see ReSTMCTSTrainer.answers
VALUE_KINDS = ("scalar", "critic")  # V_theta: a scalar head (the paper) or a step critic's re-derivations (StepCriticValue)
VALUE_AGGREGATES = ("product", "min")  # StepCriticValue: how per-step probabilities make a state's value
State = tuple[str, tuple[str, ...], "str | None"]  # (question, steps taken, answer when complete)


@dataclass
class ReSTMCTSConfig(IterativeConfig):
    problems_per_iteration: int = 128
    num_rollouts: int = 8  # MCTS* iterations (selection-expansion-simulation-backup) per problem
    branch: int = 3  # sampled next steps per expansion
    exploration: float = 0.2  # c_puct of UCT
    alpha: float = 0.5  # weight of the simulation's best value in the rolled child's value
    unvisited_bonus: float = 1.0  # UCT of an unvisited child: V + this (the official code's INF = 1.0)
    roll_branch: int = 3  # simulation: sampled candidate steps per roll-forward step (the highest-valued is kept)
    roll_forward_steps: int = 8  # simulation: at most this many roll-forward steps
    end_gate: float = 0.9  # test-time early stop: a selected terminal state valued at least this
    answer: str = "search"  # the test-time answer among the complete solutions found: one of ANSWER_RULES
    step_temperature: float = 1.0
    step_max_new_tokens: int = 24
    value_kind: str = "scalar"  # one of VALUE_KINDS; "critic" is test-time only (no value update from traces)
    value_critic: str | None = None  # value_kind critic: a causal-LM critic checkpoint (an SPC warm-up's model)
    value_aggregate: str = "product"  # value_kind critic: one of VALUE_AGGREGATES
    max_traces_per_problem: int = 2
    value_train_steps: int = 40
    value_learning_rate: float = 3e-4
    value_warmup_problems: int = 0  # seed data D_V0: training-split problems the value model is first fitted on (0: none)
    value_warmup_samples: int = 8  # policy samples (T = temperature) per warm-up problem, beside its worked solution
    value_warmup_steps: int = 0  # value-model steps on D_V0 before iteration 1's search
    ground_truth_control_of: str | None = None  # the matched control: a ReST-MCTS* run dir whose policy_traces counts it copies
    search_eval_problems: int = 64  # held-out problems searched at each evaluation (a prefix of the eval set)
    value_eval_pairs: int = 200  # held-out (correct, one-step-corrupted) partial-solution pairs
    learning_rate: float = 1e-4
    max_train_steps: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("num_rollouts", "branch", "roll_branch", "roll_forward_steps", "step_max_new_tokens", "max_traces_per_problem", "search_eval_problems")
        self.require_fractions("alpha")
        if self.value_warmup_steps and not self.value_warmup_problems:
            raise ValueError("value_warmup_steps > 0 needs value_warmup_problems > 0 (the seed data D_V0)")
        self.require_choice("answer", ANSWER_RULES)
        self.require_choice("value_kind", VALUE_KINDS)
        self.require_choice("value_aggregate", VALUE_AGGREGATES)
        if self.value_kind == "critic" and not self.value_critic:
            raise ValueError("value_kind critic needs value_critic: a causal-LM critic checkpoint (e.g. an SPC warm-up's model)")
        if self.step_temperature <= 0:
            raise ValueError(f"step_temperature must be > 0 (expansion samples), got {self.step_temperature}")


# ----------------------------------------------------------------- the search tree


@dataclass(eq=False)
class Node:
    """A partial solution: its steps, the answer when complete, and the search statistics ``V``, ``n``."""

    steps: tuple[str, ...] = ()
    answer: str | None = None
    valid: bool = True
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    value: float = 0.0
    visits: int = 0
    expanded: bool = False

    @property
    def terminal(self) -> bool:
        return self.answer is not None or not self.valid

    def child(self, action: Action) -> Node:
        node = Node(self.steps + (action.step,), action.answer, action.valid, parent=self)
        self.children.append(node)
        return node

    def nodes(self) -> list[Node]:
        return [self] + [node for child in self.children for node in child.nodes()]


def uct(child: Node, parent_visits: int, exploration: float, unvisited_bonus: float = 1.0) -> float:
    """``V_c + c sqrt(2 ln n_parent / n_c)``; an unvisited child scores ``V_c + unvisited_bonus`` (official: 1.0)."""
    if child.visits == 0:
        return child.value + unvisited_bonus
    return child.value + exploration * math.sqrt(2 * math.log(max(parent_visits, 1)) / child.visits)


def best_child(node: Node, exploration: float, unvisited_bonus: float = 1.0) -> Node:
    """The child of highest :func:`uct` (ties: the first)."""
    return max(node.children, key=lambda child: uct(child, node.visits, exploration, unvisited_bonus))


def select(root: Node, exploration: float, unvisited_bonus: float = 1.0) -> Node:
    """Descend by :func:`best_child` from ``root`` through expanded nodes to a leaf."""
    node = root
    while node.expanded and node.children:
        node = best_child(node, exploration, unvisited_bonus)
    return node


def backup(node: Node) -> None:
    """MCTS*'s backup from ``node`` to the root: ``n <- n + 1`` and, for expanded nodes, the visit-weighted
    mean of the visited children's values ``V = sum_i n_i V_i / sum_i n_i``."""
    while node is not None:
        node.visits += 1
        visited = [child for child in node.children if child.visits > 0]
        if node.expanded and visited:
            node.value = sum(c.visits * c.value for c in visited) / sum(c.visits for c in visited)
        node = node.parent


# ----------------------------------------------------------------- value inference (eqs. 1-2)


def quality_values(step_rewards: Sequence[int], distances: Sequence[int]) -> list[float]:
    """``v_1..v_K`` of eqs. (1)-(2): ``w_k = (1 - v_{k-1}) / (m_k + 1) (1 - 2 r_k)``, ``v_k = max(v_{k-1} + w_k, 0)``."""
    values, previous = [], 0.0
    for reward, distance in zip(step_rewards, distances, strict=True):
        previous = max(previous + (1.0 - previous) / (distance + 1) * (1 - 2 * reward), 0.0)
        values.append(previous)
    return values


@dataclass
class Trace:
    """A complete solution found by the search: its actions' steps, answer and correctness."""

    steps: tuple[str, ...]
    answer: str | None
    correct: bool
    from_tree: bool = False  # a complete node of the tree (else the end of a roll-forward or a seed sample)


def infer_values(traces: Sequence[Trace]) -> dict[tuple[str, ...], float]:
    """Per-prefix value targets from a problem's complete traces (the prefix of the final action
    includes the answer, keyed with the answer appended). ``r = 0`` on prefixes some correct trace
    passes through, ``m`` = fewest further steps to a correct (else any) end; ``v`` by eqs. (1)-(2)."""
    keyed = [(_trace_key(trace), trace.correct) for trace in traces]
    best: dict[tuple[str, ...], tuple[int, int]] = {}  # prefix -> (r, m), r = 0 preferred, then smaller m
    for key, correct in keyed:
        for length in range(1, len(key) + 1):
            candidate = (0 if correct else 1, len(key) - length)
            best[key[:length]] = min(best.get(key[:length], candidate), candidate)
    targets = {}
    for key, _ in keyed:
        prefixes = [key[:length] for length in range(1, len(key) + 1)]
        rewards, distances = zip(*(best[prefix] for prefix in prefixes))
        targets.update(zip(prefixes, quality_values(rewards, distances)))
    return targets


def _trace_key(trace: Trace) -> tuple[str, ...]:
    return trace.steps + (f"\nA:{trace.answer}",)


def key_text(question: str, key: tuple[str, ...], prompt: Callable[[str], str] = prompt_text) -> str:
    """The text a value-target key stands for (a partial or, with the answer entry, complete solution)."""
    if key and key[-1].startswith("\nA:"):
        return trace_text(question, key[:-1], key[-1][3:], prompt)
    return partial_solution(question, key, prompt)


# ----------------------------------------------------------------- the value model


def load_value_model(path: str | Path, pad_token_id: int) -> nn.Module:
    """A causal LM checkpoint with a fresh scalar head (or a saved value model): ``AutoModelForSequenceClassification``."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = pad_token_id
    return model.eval()


def value_model_from(policy: nn.Module, pad_token_id: int) -> nn.Module:
    """:func:`load_value_model` from a policy object (written to a temporary folder, so that
    transformers maps any architecture's causal-LM weights onto its sequence-classification class)."""
    with tempfile.TemporaryDirectory() as directory:
        policy.save_pretrained(directory)
        return load_value_model(directory, pad_token_id)


def value_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask))
    return output.logits[:, 0].float()


@torch.no_grad()
def predict_values(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 256) -> list[float]:
    """``V_theta(text) = sigmoid(logit)`` of each partial solution (left-padded batches)."""
    values = []
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        batch = ValueCollator(tokenizer)([(text, 0.0) for text in texts[start : start + batch_size]])
        logits = value_logits(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        values += torch.sigmoid(logits).tolist()
    return values


@torch.no_grad()
def derivation_probabilities(
    model: nn.Module, tokenizer, items: Sequence[tuple[str, str]], batch_size: int = 128
) -> list[float]:
    """For each ``(critic prompt, judged step)``: the critic's teacher-forced probability of re-deriving
    exactly that step, ``P("D:<step> vs " | prompt)`` (the closing `` vs `` ends the step, so ``12`` is
    not a prefix of ``123``)."""
    probabilities = []
    device = next(model.parameters()).device
    for start in range(0, len(items), batch_size):
        encoded = [
            split_continuation(tokenizer, prompt, f"{DERIVATION_MARK}{step}{COMPARISON_MARK}")[:2]
            for prompt, step in items[start : start + batch_size]
        ]
        batch = {key: value.to(device) for key, value in sequence_batch(encoded, tokenizer.pad_token_id).items()}
        logprobs, mask = completion_token_logprobs(model, batch)
        probabilities += torch.exp((logprobs * mask).sum(-1)).tolist()
    return probabilities


class StepCriticValue:
    """A generative process value (our departure; the paper's ``V_theta`` is a scalar PRM head): a step
    critic that re-derives each step (SPC's critique ``D:<step> vs <result>``, docs/llm_spc_mcts.md)
    judges every step of a partial solution, ``p_k = P_critic(re-derivation = step_k | prefix)``
    (:func:`derivation_probabilities`), and the state's value is ``prod_k p_k`` (``aggregate="product"``:
    the probability that no step so far is wrong, if the verdicts were independent) or ``min_k p_k``.
    A complete solution's answer line is not judged (the critic judges steps only). Per-step
    probabilities are cached by (question, prefix, step), so a child costs one critic row."""

    def __init__(self, model: nn.Module, tokenizer, prompt: Callable[[str], str] = prompt_text, aggregate: str = "product") -> None:
        if aggregate not in VALUE_AGGREGATES:
            raise ValueError(f"aggregate must be one of {VALUE_AGGREGATES}, got {aggregate!r}")
        self.model, self.tokenizer, self.prompt, self.aggregate = model.eval(), tokenizer, prompt, aggregate
        self.cache: dict[tuple[str, tuple[str, ...]], float] = {}
        self.rows = 0  # critic rows scored (one forward row each): the value's compute

    def __call__(self, states: Sequence[State]) -> list[float]:
        keys = [(question, tuple(steps[: k + 1])) for question, steps, _ in states for k in range(len(steps))]
        missing = list(dict.fromkeys(key for key in keys if key not in self.cache))
        items = [(critic_prompt(question, steps[:-1], steps[-1], self.prompt), steps[-1]) for question, steps in missing]
        self.cache.update(zip(missing, derivation_probabilities(self.model, self.tokenizer, items)))
        self.rows += len(missing)
        combine = math.prod if self.aggregate == "product" else min
        return [
            combine(self.cache[(question, tuple(steps[: k + 1]))] for k in range(len(steps))) if steps else 1.0
            for question, steps, _ in states
        ]


class ValueCollator:
    """``(text, target)`` pairs -> left-padded ``input_ids``/``attention_mask`` and ``targets``."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, examples: Sequence[tuple[str, float]]) -> dict[str, torch.Tensor]:
        ids = [self.tokenizer(text, add_special_tokens=False).input_ids for text, _ in examples]
        return {
            "input_ids": pad_sequences(ids, self.tokenizer.pad_token_id, left=True),
            "attention_mask": pad_sequences([[1] * len(row) for row in ids], 0, left=True),
            "targets": torch.tensor([target for _, target in examples], dtype=torch.float32),
        }


class ValueRegressionObjective(Objective):
    """The value model's loss: ``mean (sigmoid(logit(p_k)) - v_k)^2`` over inferred targets."""

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        values = torch.sigmoid(value_logits(model, batch["input_ids"], batch["attention_mask"]))
        loss = torch.mean((values - batch["targets"]) ** 2)
        return loss, {"value_mean": float(values.detach().mean())}


# ----------------------------------------------------------------- the recipe


@dataclass
class SearchResult:
    """One problem's search: its tree, the complete traces found and the chosen (highest-valued) answer."""

    root: Node
    traces: list[tuple[Trace, float]]  # (trace, value) of complete solutions: tree terminals + simulations
    expansions: int = 0

    def best(self) -> Trace | None:
        return max(self.traces, key=lambda item: item[1])[0] if self.traces else None


def ranked_correct(traces: Sequence[tuple[Trace, float]]) -> list[tuple[str, ...]]:
    """The distinct correct traces as ``(*steps, answer)``, highest quality first: the value the search gave
    the trace, descending (a trace found twice keeps its best value); ties: fewer steps first."""
    quality: dict[tuple[str, ...], float] = {}
    for trace, value in traces:
        if trace.correct:
            key = trace.steps + (trace.answer,)
            quality[key] = max(quality.get(key, value), value)
    return sorted(quality, key=lambda key: (-quality[key], len(key)))


class ReSTMCTSTrainer(IterativeTrainer):
    config_class = ReSTMCTSConfig
    uses_reward_fn = False  # a trace's correctness is verify() (a user's verify_fn=)
    plot_keys = ("accuracy", "search_accuracy", "value_pair_accuracy", "value_terminal_accuracy", "search_solved", "expansions_per_s")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.base_path is not None:
            self.value_model = load_value_model(self.base_path, self.tokenizer.pad_token_id)
        else:
            self.value_model = value_model_from(self.policy, self.tokenizer.pad_token_id)
        self.critic_value = None
        self.compute: Counter[str] = Counter()  # search compute: sampled_steps, generated_tokens, value_rows
        if self.config.value_kind == "critic":
            self.use_critic_value(self.config.value_critic)
        self.value_pairs = self._value_pairs()

    def use_critic_value(self, path: str | Path) -> None:
        """Value states by a step critic (:class:`StepCriticValue`) loaded from ``path``, a causal-LM checkpoint."""
        critic = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.critic_value = StepCriticValue(critic, self.tokenizer, self.format.prompt, self.config.value_aggregate)

    def _resume(self):
        history, done = super()._resume()
        saved = self.iteration_dir(done) / "value"
        if done and (saved / "config.json").is_file():
            self.value_model = load_value_model(saved, self.tokenizer.pad_token_id)
        return history, done

    # ------------------------------------------------------------- search

    def state_text(self, question: str, steps: Sequence[str], answer: str | None = None) -> str:
        """A search state (or, with ``answer``, a complete solution) after the prompt format's prompt."""
        return trace_text(question, steps, answer, self.format.prompt)

    def values(self, states: Sequence[State]) -> list[float]:
        """``V`` of each ``(question, steps, answer)`` state: the step critic's (``value_kind: critic``) or the
        scalar value model's ``V_theta`` of the state's text."""
        if self.critic_value is not None:
            rows = self.critic_value.rows
            values = self.critic_value(states)
            self.compute["value_rows"] += self.critic_value.rows - rows
            return values
        self.compute["value_rows"] += len(states)
        return predict_values(self.value_model, self.tokenizer, [self.state_text(*state) for state in states])

    def propose(self, problems: list[Problem], states: list[tuple[str, ...]], num: int, seed: int) -> list[list[Action]]:
        """``num`` sampled next steps after each partial solution (one batched call, stopped at a comma)."""
        config = self.config
        params = SamplingParams(
            temperature=config.step_temperature, num_samples=num, max_new_tokens=config.step_max_new_tokens,
            stop_strings=(",",), batch_size=config.generation_batch_size,
        )
        rollouts = self.generate([self.state_text(p.question, steps) for p, steps in zip(problems, states)], params, seed)
        self.compute.update(sampled_steps=len(rollouts), generated_tokens=sum(len(r.completion_ids) for r in rollouts))
        actions = []
        for rollout in rollouts:
            ended_by_eos = rollout.completion_ids[-1:] == [self.tokenizer.eos_token_id]
            actions.append(parse_action(rollout.text, rollout.finished and not ended_by_eos))
        return [actions[index * num : (index + 1) * num] for index in range(len(states))]

    def action_values(self, problems: list[Problem], states: list[tuple[str, ...]], actions: list[list[Action]]) -> list[list[float]]:
        """``V_theta`` of each state extended by each of its actions (0 for an invalid action)."""
        extended = [
            (p.question, steps + (a.step,), a.answer)
            for p, steps, group in zip(problems, states, actions) for a in group if a.valid
        ]
        values = iter(self.values(extended))
        return [[next(values) if a.valid else 0.0 for a in group] for group in actions]

    def expand(self, problems: list[Problem], leaves: list[Node], seed: int) -> list[list[Node]]:
        """Sample ``branch`` next steps for each leaf; its distinct ones become children valued ``V_theta``."""
        states = [leaf.steps for leaf in leaves]
        actions = self.propose(problems, states, self.config.branch, seed)
        distinct = [list({(a.step, a.answer, a.valid): a for a in group}.values()) for group in actions]
        children = []
        for leaf, group, values in zip(leaves, distinct, self.action_values(problems, states, distinct)):
            children.append([leaf.child(action) for action in group])
            for child, value in zip(children[-1], values):
                child.value = value
            leaf.expanded = True
        return children

    def simulate(self, problems: list[Problem], nodes: list[Node], seed: int) -> list[tuple[Trace | None, float]]:
        """The official value-greedy roll-forward from each node: at most ``roll_forward_steps`` times sample
        ``roll_branch`` next steps, value them and keep the highest-valued; stop at a terminal step. Returns
        the complete trace reached (None if none) and ``best``, the highest value along the roll-forward."""
        config = self.config
        states = [node.steps for node in nodes]
        best, traces = [0.0] * len(nodes), [None] * len(nodes)
        active = list(range(len(nodes)))
        for step in range(config.roll_forward_steps):
            if not active:
                break
            active_problems, active_states = [problems[i] for i in active], [states[i] for i in active]
            actions = self.propose(active_problems, active_states, config.roll_branch, seed * 100 + step)
            values = self.action_values(active_problems, active_states, actions)
            still = []
            for index, group, group_values in zip(active, actions, values):
                pick = max(range(len(group)), key=group_values.__getitem__)
                action, value = group[pick], group_values[pick]
                best[index] = max(best[index], value)
                states[index] = states[index] + (action.step,)
                if action.answer is not None and action.valid:
                    text = completion_text(list(states[index]), action.answer)
                    traces[index] = Trace(states[index], action.answer, self.verify(problems[index], text))
                elif not action.terminal:
                    still.append(index)
            active = still
        return list(zip(traces, best))

    def search(self, problems: list[Problem], seed: int, early_stop: bool = False) -> list[SearchResult]:
        """MCTS* on every problem, trees advancing in lockstep (see the module docstring)."""
        config = self.config
        results = [SearchResult(Node(), []) for _ in problems]
        active = list(range(len(problems)))
        for round_index in range(config.num_rollouts):
            leaves = {index: select(results[index].root, config.exploration, config.unvisited_bonus) for index in active}
            if early_stop:
                for index in [i for i in active if leaves[i].terminal and leaves[i].value >= config.end_gate]:
                    active.remove(index)
            open_ = [index for index in active if not leaves[index].terminal]
            expanded = self.expand([problems[i] for i in open_], [leaves[i] for i in open_], seed * 1000 + round_index)
            rolled = {}
            for index, children in zip(open_, expanded):
                results[index].expansions += 1
                if children:
                    rolled[index] = best_child(leaves[index], config.exploration, config.unvisited_bonus)
            rolling = [i for i in rolled if not rolled[i].terminal]
            outcomes = dict(zip(rolling, self.simulate([problems[i] for i in rolling], [rolled[i] for i in rolling], seed * 1000 + round_index)))
            for index, node in rolled.items():  # a terminal child is not rolled forward: its own value is kept
                trace, best = outcomes.get(index, (None, node.value))
                node.value = (1 - config.alpha) * node.value + config.alpha * best
                node.visits += 1
                if trace is not None:
                    results[index].traces.append((trace, best))
            for index in active:
                backup(leaves[index])
        for problem, result in zip(problems, results):
            for node in result.root.nodes():
                if node.answer is not None and node.valid:
                    text = completion_text(list(node.steps), node.answer)
                    trace = Trace(node.steps, node.answer, self.verify(problem, text), from_tree=True)
                    result.traces.append((trace, node.value))
        return results

    def answers(self, problems: list[Problem], results: list[SearchResult], rule: str | None = None) -> list[Trace | None]:
        """The test-time answer of each search under ``rule`` (default ``config.answer``):
        ``search`` - the highest value the search gave a complete solution (a tree terminal's node value, a
        roll-forward's ``best``, i.e. the highest value *along* that roll-forward, not its end's);
        ``terminal`` - the highest ``V_theta`` of the complete solution itself;
        ``tree`` - the official ``root.getBestV()`` over complete tree nodes only (node values; roll-forward
        ends are not candidates in the official code), else ``terminal`` when the tree has none."""
        rule = rule or self.config.answer
        if rule not in ANSWER_RULES:
            raise ValueError(f"answer rule must be one of {ANSWER_RULES}, got {rule!r}")
        if rule == "search":
            return [result.best() for result in results]
        if rule == "tree":
            trees = [[(t, v) for t, v in result.traces if t.from_tree] for result in results]
            if all(trees):
                return [max(tree, key=lambda item: item[1])[0] for tree in trees]
        distinct = [list({(t.steps, t.answer): t for t, _ in result.traces}.values()) for result in results]
        values = iter(self.values([(p.question, t.steps, t.answer) for p, ts in zip(problems, distinct) for t in ts]))
        scored = [[(t, next(values)) for t in ts] for ts in distinct]
        if rule == "tree":
            scored = [tree or pool for tree, pool in zip(trees, scored)]
        return [max(pool, key=lambda item: item[1])[0] if pool else None for pool in scored]

    def search_metrics(self, problems: list[Problem], seed: int) -> dict[str, float]:
        """Test-time search accuracy, and how well ``V_theta`` tells apart the complete solutions the search
        found: balanced accuracy of ``V >= 0.5`` against the verifier (mean of the accuracies on correct
        and on wrong solutions, every distinct solution counted once; 0.5 = chance)."""
        results = self.search(problems, seed, early_stop=True)
        found = {(p.question, t.steps, t.answer): t.correct for p, r in zip(problems, results) for t, _ in r.traces}
        values = self.values(list(found))
        per_class = [
            [(v >= 0.5) == ok for v, ok in zip(values, found.values()) if ok == label] for label in (True, False)
        ]
        return {
            "search_accuracy": sum(bool(t and t.correct) for t in self.answers(problems, results)) / len(results),
            "value_terminal_accuracy": sum(sum(c) / len(c) if c else 0.5 for c in per_class) / 2,
        }

    # ------------------------------------------------------------- one iteration

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems = self.problems(iteration)
        if config.ground_truth_control_of is not None:
            return self.control_round(iteration, problems)
        start = time.perf_counter()
        results = self.search(problems, seed=iteration)
        search_seconds = time.perf_counter() - start
        expansions = sum(r.expansions for r in results)
        value_examples, policy_examples = [], []
        for problem, result in zip(problems, results):
            traces = [trace for trace, _ in result.traces]
            for key, target in infer_values(traces).items():
                value_examples.append((key_text(problem.question, key, self.format.prompt), target))
            for *steps, answer in ranked_correct(result.traces)[: config.max_traces_per_problem]:
                policy_examples.append(TextPair(self.prompt(problem), completion_text(steps, answer)))
        value_examples = list(dict(value_examples).items())
        value_logs = self.train_value_model(
            self.iteration_dir(iteration), value_examples, config.value_train_steps, config.seed + iteration
        )
        logs = {
            "search_solved": sum(any(t.correct for t, _ in r.traces) for r in results) / len(results),
            "expansions_per_s": expansions / search_seconds,
            "nodes_per_s": sum(len(r.root.nodes()) - 1 for r in results) / search_seconds,
            "value_examples": float(len(value_examples)),
            "policy_traces": float(len(policy_examples)),
            **value_logs,
        }
        return Round(SFTObjective(), policy_examples, SFTCollator(self.tokenizer, config.max_length), logs)

    def control_round(self, iteration: int, problems: list[Problem]) -> Round:
        """The matched control (not in the paper): SFT of the policy on the reference worked solutions of the
        first ``n`` of the same fresh draws, ``n`` = the ``policy_traces`` the ReST-MCTS* run
        ``ground_truth_control_of`` kept in this iteration, for the same steps; no search, no value model."""
        metrics = Path(self.config.ground_truth_control_of) / "metrics.jsonl"
        if not metrics.is_file():
            raise FileNotFoundError(f"ground_truth_control_of: {metrics} not found (a finished ReST-MCTS* run's output_dir)")
        counts = {record["iteration"]: record.get("policy_traces") for record in map(json.loads, metrics.read_text().splitlines())}
        if counts.get(iteration) is None:
            raise ValueError(f"ground_truth_control_of: {metrics} has no policy_traces for iteration {iteration}")
        examples = [TextPair(self.prompt(p), self.task.worked_solution(p)) for p in problems[: int(counts[iteration])]]
        return Round(SFTObjective(), examples, SFTCollator(self.tokenizer, self.config.max_length), {"policy_traces": float(len(examples))})

    # ------------------------------------------------------------- the value model

    def seed_value_examples(self) -> list[tuple[str, float]]:
        """The seed data D_V0: for each of ``value_warmup_problems`` training-split problems, its worked solution
        (a correct trace) and ``value_warmup_samples`` policy samples judged by the verifier; every prefix gets
        its value target from :func:`infer_values` (eqs. 1-2), as the searched traces do in an iteration."""
        config, k = self.config, self.config.value_warmup_samples
        problems = self.task.sample(config.value_warmup_problems, derive_seed(config.seed, "value-warmup"))
        rollouts = self.solve(problems, num_samples=k, seed=derive_seed(config.seed, "value-warmup-samples"))
        examples: dict[str, float] = {}
        for index, problem in enumerate(problems):
            worked = self.task.worked_solution(problem)
            traces = [Trace(tuple(solution_steps(worked)), extract_answer(worked), True)]
            for rollout in rollouts[index * k : (index + 1) * k]:
                steps, answer = solution_steps(rollout.text), extract_answer(rollout.text)
                if steps and answer is not None:
                    traces.append(Trace(tuple(steps), answer, self.verify(problem, rollout.text)))
            for key, target in infer_values(traces).items():
                examples[key_text(problem.question, key, self.format.prompt)] = target
        return list(examples.items())

    def warm_up_value_model(self) -> dict[str, float]:
        """Fit ``V_theta`` on D_V0 (:meth:`seed_value_examples`) for ``value_warmup_steps`` before the first
        search, into ``output_dir/value-warmup/value`` (reloaded, not refitted, when resuming)."""
        directory = self.output_dir / "value-warmup"
        if self.config.resume_from == "latest" and (directory / "value" / "config.json").is_file():
            self.value_model = load_value_model(directory / "value", self.tokenizer.pad_token_id)
            return {}
        start = time.perf_counter()
        examples = self.seed_value_examples()
        logs = self.train_value_model(directory, examples, self.config.value_warmup_steps, self.config.seed)
        logs = {"value_warmup_examples": float(len(examples)), "time_value_warmup_s": time.perf_counter() - start, **logs}
        (directory / "summary.json").write_text(json.dumps(logs))
        return logs

    def train(self):
        if self.critic_value is not None:
            raise ValueError("value_kind critic is test-time only: the recipe's value update regresses a scalar head")
        if self.config.value_warmup_steps and self.config.ground_truth_control_of is None:
            logger.info("value model warm-up on D_V0: %s", self.warm_up_value_model())
        return super().train()

    def train_value_model(self, directory: Path, examples: list[tuple[str, float]], steps: int, seed: int) -> dict[str, float]:
        """Regress the value model on ``examples`` (text, target) for ``steps`` steps (the shared Trainer,
        exported to ``directory/value``)."""
        if not examples:
            return {}
        config = self.config
        value_config = replace(
            config, output_dir=str(directory / "value-run"), export_dir=str(directory / "value"),
            max_train_steps=steps, learning_rate=config.value_learning_rate,
            train_batch_size=min(config.train_batch_size, len(examples)), resume_from=None, seed=seed,
        )
        start = time.perf_counter()
        trainer = Trainer(
            self.value_model.train(), ValueRegressionObjective(), examples, value_config,
            export_fn=lambda model, directory: model.save_pretrained(directory), collate_fn=ValueCollator(self.tokenizer),
        )
        result = trainer.train()
        self.value_model = trainer.unwrapped_model.eval()
        return {"value_loss": result.final_loss, "time_value_update_s": time.perf_counter() - start}

    # ------------------------------------------------------------- evaluation

    def _value_pairs(self) -> list[tuple[State, State]]:
        """Held-out (correct partial solution, the same with its last step corrupted) pairs."""
        if not isinstance(self.task, ArithmeticTask):
            return []
        rng = random.Random(self.config.seed)
        solutions = labelled_solutions(self.task, self.config.value_eval_pairs, EVAL_SEED + 700, 0.0, split="eval")
        pairs = []
        for solution in solutions:
            length = rng.randrange(1, len(solution.steps) + 1)
            good = tuple(solution.steps[:length])
            bad = good[:-1] + (corrupt_step(good[-1], rng.choice(("calculation", "carry", "operand")), rng),)
            pairs.append(((solution.problem.question, good, None), (solution.problem.question, bad, None)))
        return pairs

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        if self.config.ground_truth_control_of is not None:
            return metrics  # the control trains the policy only
        problems = self.eval_set[: self.config.search_eval_problems]
        metrics.update(self.search_metrics(problems, seed=EVAL_SEED))
        metrics["greedy_accuracy_search_subset"] = self._greedy_accuracy(problems)
        if self.value_pairs:
            good = self.values([g for g, _ in self.value_pairs])
            bad = self.values([b for _, b in self.value_pairs])
            metrics["value_pair_accuracy"] = sum(g > b for g, b in zip(good, bad)) / len(good)
        return metrics

    def value_auc(self, problems: list[Problem], num_samples: int = 4, seed: int = EVAL_SEED) -> dict[str, float]:
        """How ``V_theta`` ranks the policy's own solutions (``num_samples`` at the config's temperature per
        problem): ``prefix_auc`` over every partial solution, labelled correct when it is a prefix of the
        task's worked solution (exact for column addition, whose worked solution is the only correct one),
        and ``terminal_auc`` over complete solutions labelled by the verifier (0.5: chance)."""
        rollouts = self.solve(problems, num_samples=num_samples, seed=seed)
        states, labels, terminal = [], [], []
        for index, rollout in enumerate(rollouts):
            problem = problems[index // num_samples]
            reference = solution_steps(self.task.worked_solution(problem))
            steps, answer = solution_steps(rollout.text), extract_answer(rollout.text)
            for length in range(1, len(steps) + 1):
                states.append((problem.question, tuple(steps[:length]), None))
                labels.append(steps[:length] == reference[:length])
                terminal.append(False)
            if steps and answer is not None:
                states.append((problem.question, tuple(steps), answer))
                labels.append(self.verify(problem, rollout.text))
                terminal.append(True)
        values, labels, terminal = np.array(self.values(states)), np.array(labels), np.array(terminal)
        return {
            "value_prefix_auc": ranking_auc(values[~terminal], labels[~terminal]),
            "value_terminal_auc": ranking_auc(values[terminal], labels[terminal]),
        }

    def _greedy_accuracy(self, problems: list[Problem]) -> float:
        rollouts = self.solve(problems, temperature=0.0, num_samples=1)
        return sum(self.verify(p, r.text) for p, r in zip(problems, rollouts)) / len(problems)


def expansions_per_second(trainer: ReSTMCTSTrainer, problems: list[Problem], lockstep: bool = True, seed: int = 0) -> float:
    """Tree-search node expansions per second of ``trainer.search`` on ``problems``: all trees in lockstep
    (one batched call per phase), or one problem at a time (``lockstep=False``, the unbatched reference)."""
    start = time.perf_counter()
    groups = [problems] if lockstep else [[problem] for problem in problems]
    expansions = sum(result.expansions for group in groups for result in trainer.search(group, seed))
    return expansions / (time.perf_counter() - start)


METHOD = Method(
    name="rest_mcts",
    summary="ReST-MCTS*: value-guided MCTS* over steps; inferred per-step values train the value model, correct traces the policy",
    config_class=ReSTMCTSConfig,
    train=run_recipe(ReSTMCTSTrainer),
)
