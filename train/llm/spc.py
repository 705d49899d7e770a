"""SPC: Self-Play Critic (Chen et al., 2025, "SPC: Evolving Self-Play Critic via Adversarial Games for
LLM Reasoning").

Two roles of one model (role prompts of :mod:`selfgen.data.reasoning`) play an adversarial game on
reasoning steps:

* the **sneaky generator** sees a partial solution and a *correct* step ``t_k`` taken from the solver's
  own correct solution (a random position ``k``) and rewrites it into an erroneous step ``t'_k``;
  with ``sneaky_error_types`` the move first names one of those error types, then writes the step
  (``carry:4+8+0=12``), as the paper's generator picks an error type from a predefined list before it
  corrupts the step; its warm-up shows every listed type, and the game plays the step after the name;
* **automated validation** (the paper's check that a sneaky step is really wrong): the solver (the
  same policy) completes the solution ``validation_samples`` times from the partial solution with the
  original step and with the sneaky step; the sneaky step counts as a successful error when the
  original step's completions succeed at least ``min_original_success`` of the time and the sneaky
  step's never do. With ``require_step_form`` a move that is not a step ``a<op>b[+c]=r``
  (after its error type) also fails: at temperature 1 our typed sneaky generator garbled the type name
  or the step in 85 of its 86 validated moves (``carry:2+6+2=9`` came out as ``carruoatiinn:2+6+2=9``),
  and the comparison verdict accepts a garbled step whose result is right, so the game rewarded garbage.
  Failed attempts score ``-1`` for the sneaky generator and are not played;
* the **critic** sees the partial solution and a step and writes a critique, ``critic_samples`` times
  per step: it re-derives the step (``D:`` and the step recomputed from the question's column digits
  and the carry of the partial solution's last step), writes the judged step's result beside it
  (``D:4+8+1=13 vs 14``, ``critique_format="compare"``) and concludes with its verdict, ``V:Y``
  (correct) or ``V:N`` (wrong) - the paper's critic analyses the step, then answers
  ``Correct``/``Incorrect`` (official ``eval/infer_batch.py``); a column re-derivation and comparison
  is that analysis for column arithmetic. With ``verdict_source="comparison"`` the verdict used is
  what the written comparison states (``13 vs 14``: wrong), read by a rule as the official code reads
  ``<Answer>...</Answer>``; ``"written"`` uses the ``V:`` token.

Game outcome (the paper's reward assignment): on a successful sneaky step, a critique that finds the
error (``V:N``) scores ``+1`` for the critic and ``-1`` for the sneaky generator, a fooled critique
(``V:Y`` or no verdict) ``-1`` and ``+1``; the sneaky generator's reward is the mean over the step's
critiques. To keep the critic from answering "wrong" to everything, the paper also plays the critic on
the original correct steps (``+1`` for ``V:Y``, ``-1`` otherwise), balanced one to one with the
sneaky steps.

Update: the paper's offline RL on the game records - a clipped importance-ratio policy gradient with
the game reward as the advantage and a KL penalty to the reference model, i.e. the shared
:class:`~selfgen.train.llm.objectives.GRPOObjective` fed with ``A = reward`` (no group
normalisation), the sampler's log-probabilities as ``pi_old`` and the iteration's starting model as
reference, on the sneaky and critic samples together, plus the official SFT term (SPAG's loss, run by
SPC's ``scripts/rl_critic.sh`` on the game data and the round-0 SFT data with ``lm_sft_coeff 0.15``):
``rl_sft_coefficient`` x the mean NLL of as many warm-up examples as game samples (:class:`SPCObjective`).

The critic's game data across rounds (``sneaky_history``): the official round-2 critic is trained on the
game records of rounds 1 and 2 together (``data_round2_rl_critic.json``, ``scripts/rl_critic.sh``). With
``sneaky_history="all"`` each round's validated sneaky steps are recorded (``iteration-k/sneaky_steps.jsonl``,
:class:`SneakyStep`) and the critic judges those of every earlier round besides its own (freshly sampled
critiques of the recorded steps, each with its original step, rewarded as above; the sneaky generator is
rewarded on its own round's steps only). ``critic_kind_balance`` (our addition, not in the paper)
resamples the steps the critic judges to an equal share per error kind (:func:`error_kind`: the carry,
an operand or only the result differs from the original step; :func:`balanced_by_kind`), so a kind the
sneaky generator rarely writes still weighs a third of the critic's games.

Supervised warm-up (the paper's SFT initialisation of both roles, here on rule-built data because the
tiny base model has never seen the role formats; :meth:`SPCTrainer.seed_round`): ``warmup_examples``
critic (a share ``warmup_critic_fraction``, half of them on correct steps) and sneaky examples from :func:`~selfgen.data.reasoning.corrupt_step` with the error kinds
``warmup_error_kinds`` only (``calculation`` by default), plus plain worked solutions so solving is
kept; ``warmup_verdict_weight`` weighs the verdict token in the SFT loss (one token of a ~15-token
critique: at weight 1 our warm-up critic re-derived 0.96 of the steps right but accepted 0.97 of the
solutions). The paper distils its SFT critiques from a stronger model; ours are written by the task's
solver: the re-derivation is the reference step, the verdict whether the judged step equals it
(:func:`~selfgen.data.reasoning.critic_completion`). The held-out detection set uses all three error kinds, so a critic that only learned the
warm-up's kind is not rewarded for it.

Evaluation: the critic judges every step (greedy critique) of held-out solutions (half clean, half with one
rule-corrupted step of any kind); a solution is flagged when some step gets ``V:N`` (or no verdict),
its first flagged step is the predicted error location. Reported: the step-level ``critic_step_f1``
(:func:`step_labels`), error-detection ``critic_f1`` (positive = erroneous solution), ProcessBench's
``critic_processbench_f1`` (the paper's benchmark metric), ``critic_accuracy``,
``critic_location_accuracy`` (first error found at the right step, or a clean solution passed), the
recall per error kind ``critic_recall_<kind>``, ``critic_derivation_accuracy`` (the re-derived step
equals the reference step, on the scored steps of :func:`step_labels`), and the **filter**: held-out greedy accuracy of all
solutions vs of the solutions the critic accepts (``filtered_accuracy``, ``accept_rate``).

Departures: one model plays both roles (the paper fine-tunes two copies); without
``sneaky_error_types`` (the earlier runs) no error-type selection in the sneaky generator's move, and
its warm-up shows ``warmup_error_kinds`` only; the error types are the three rule-built kinds, not the paper's list; the warm-up critiques are rule-built (solver-written), not distilled from a
stronger model; the critique is a one-line re-derivation and comparison, not free text; with
``verdict_source="comparison"`` a rule reads the verdict off the comparison (our 3.2 M critic's written
``V:`` stays at chance given the right comparison, docs/llm_part2.md pass 3); the SFT rows of the game
update are drawn 1:1 with the game samples (the official data mix is not stated); each round's update
continues from the last round's model with its sampler's log-probabilities as ``pi_old`` (the official
critic of round k restarts from the round-0 SFT critic, its ratio taken against that model, 3 epochs over
all rounds' data: a growing budget we do not spend), so with ``sneaky_history="all"`` the earlier rounds'
sneaky steps are re-critiqued by the current critic rather than replayed with their old critiques. ``critique_format="verdict"``
keeps the earlier departure (the verdict alone: on the 3.2 M Llama base its critic could not check a
column sum, step TPR 0.015 vs FPR 0.006, docs/llm_part2.md) for the documented 0.86 M runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ...data.problems import Problem
from ...data.reasoning import (
    CRITIQUE_FORMATS,
    ERROR_KINDS,
    LabelledSolution,
    corrupt_step,
    critic_completion,
    comparison_verdict,
    critic_prompt,
    implied_verdict,
    labelled_solutions,
    parse_derivation,
    partial_solution,
    reference_steps,
    sneaky_prompt,
)
from ...data.tasks import STEP_PATTERN, ArithmeticTask, derive_seed, parse_verdict, solution_steps
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .lm import EVAL_SEED
from .modeling import frozen_copy
from .objectives import GRPOCollator, GRPOObjective, PolicySample, SFTCollator, SFTObjective, TextPair, encode_pair
from .rollout import Rollout, SamplingParams

VERDICT_SOURCES = ("written", "comparison")
SNEAKY_HISTORIES = ("current", "all")
SNEAKY_STEPS_FILE = "sneaky_steps.jsonl"  # an iteration's validated sneaky steps, for later rounds' critics
WARMUP_SEED = 8_500  # warm-up problems come from training seeds, apart from problems(iteration)


@dataclass
class SPCConfig(IterativeConfig):
    problems_per_iteration: int = 128
    samples_per_problem: int = 2  # solver samples per problem (a correct one provides the game's steps)
    validation_samples: int = 4
    min_original_success: float = 0.5
    critic_samples: int = 2
    step_max_new_tokens: int = 16
    critic_max_new_tokens: int = 24  # "D:9+9+1=19 vs 18\nV:N" (a verdict alone needs 4)
    critique_format: str = "compare"  # "rederive": no written comparison; "verdict": the verdict alone (earlier formats)
    verdict_source: str = "written"  # or "comparison": the verdict read off the critique's written comparison
    beta: float = 0.04
    epsilon: float = 0.2
    learning_rate: float = 1e-5
    max_train_steps: int = 30
    train_batch_size: int = 32
    warmup_examples: int = 1500  # rule-built critic + sneaky examples (+ a third as many worked solutions)
    warmup_critic_fraction: float = 0.7  # share of critic (vs sneaky) examples in the warm-up
    warmup_error_kinds: list[str] = field(default_factory=lambda: ["calculation"])
    warmup_train_steps: int = 150
    warmup_learning_rate: float = 3e-4
    warmup_verdict_weight: float = 1.0  # SFT loss weight of a warm-up critique's verdict token (the others weigh 1)
    rl_sft_coefficient: float = 0.15  # the official lm_sft_coeff: warm-up examples' NLL weight in the game update
    detection_problems: int = 200
    sneaky_history: str = "current"  # "all": the critic also judges the validated sneaky steps of every earlier round
    critic_kind_balance: bool = False  # resample the critic's sneaky steps to an equal share per error kind
    sneaky_error_types: list[str] = field(default_factory=list)  # the sneaky move names one first ("carry:4+8+0=12")
    require_step_form: bool = False  # a sneaky move that is no step a<op>b[+c]=r is a failed attempt, not a played error

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("validation_samples", "critic_samples", "detection_problems")
        self.require_fractions("warmup_critic_fraction", "min_original_success")
        if self.warmup_verdict_weight <= 0:
            raise ValueError(f"warmup_verdict_weight must be > 0, got {self.warmup_verdict_weight}")
        if self.rl_sft_coefficient < 0:
            raise ValueError(f"rl_sft_coefficient must be >= 0, got {self.rl_sft_coefficient}")
        unknown = set(self.warmup_error_kinds) - set(ERROR_KINDS)
        if not self.warmup_error_kinds or unknown:
            raise ValueError(f"warmup_error_kinds must be a non-empty subset of {ERROR_KINDS}, got {self.warmup_error_kinds}")
        if self.critique_format not in CRITIQUE_FORMATS:
            raise ValueError(f"critique_format must be one of {CRITIQUE_FORMATS}, got {self.critique_format!r}")
        if self.verdict_source not in VERDICT_SOURCES:
            raise ValueError(f"verdict_source must be one of {VERDICT_SOURCES}, got {self.verdict_source!r}")
        if self.verdict_source == "comparison" and self.critique_format != "compare":
            raise ValueError(f"verdict_source='comparison' needs critique_format='compare', got {self.critique_format!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0: the game's moves are sampled, got {self.temperature}")
        if set(self.sneaky_error_types) - set(ERROR_KINDS):
            raise ValueError(f"sneaky_error_types must be a subset of {ERROR_KINDS}, got {self.sneaky_error_types}")
        if self.sneaky_history not in SNEAKY_HISTORIES:
            raise ValueError(f"sneaky_history must be one of {SNEAKY_HISTORIES}, got {self.sneaky_history!r}")


# ----------------------------------------------------------------- the game


def critic_rewards(verdicts: Sequence[bool | None], step_is_wrong: bool) -> list[float]:
    """``+1`` for a critique whose verdict is right (``V:N`` on a wrong step, ``V:Y`` on a correct one),
    ``-1`` otherwise (a critique without a verdict is wrong)."""
    return [1.0 if verdict is (not step_is_wrong) else -1.0 for verdict in verdicts]


def sneaky_reward(effective: bool, critic_step_rewards: Sequence[float]) -> float:
    """The sneaky generator's outcome: ``-1`` when its step failed validation (not actually wrong),
    else the mean of ``-r_critic`` over the critiques of its step (``+1`` per fooled critique)."""
    if not effective or not critic_step_rewards:
        return -1.0
    return -sum(critic_step_rewards) / len(critic_step_rewards)


def sneaky_is_effective(original_success: float, sneaky_success: float, changed: bool, min_original_success: float) -> bool:
    """The paper's automated validation: the original step leads to the answer, the sneaky step never does."""
    return changed and original_success >= min_original_success and sneaky_success == 0.0


def error_kind(step: str, sneaky: str) -> str:
    """The kind of a sneaky step's error against the correct ``step`` (both ``a<op>b[+c]=r``, the kinds of
    :func:`~selfgen.data.reasoning.corrupt_step`): ``carry`` when its carry differs, else ``operand`` when
    an operand (or the operator) differs, else ``calculation`` (only the result); ``other`` when either
    step is not of that form."""
    original, changed = STEP_PATTERN.match(step), STEP_PATTERN.match(sneaky)
    if original is None or changed is None:
        return "other"
    left, op, right, carry, _ = original.groups()
    sneaky_left, sneaky_op, sneaky_right, sneaky_carry, _ = changed.groups()
    if carry != sneaky_carry:
        return "carry"
    return "operand" if (left, op, right) != (sneaky_left, sneaky_op, sneaky_right) else "calculation"


@dataclass
class SneakyStep:
    """A validated sneaky step ``sneaky`` that replaced the correct ``step`` after ``prefix`` (a game record)."""

    problem: Problem
    prefix: list[str]
    step: str
    sneaky: str

    @property
    def kind(self) -> str:
        return error_kind(self.step, self.sneaky)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> SneakyStep:
        record = json.loads(line)
        return cls(Problem(**record.pop("problem")), **record)


def balanced_by_kind(steps: Sequence[SneakyStep], rng: random.Random) -> list[SneakyStep]:
    """``steps`` resampled to an equal count per error kind (:func:`error_kind`), about as many in all:
    each kind's steps repeated ``per // n`` times plus ``per % n`` of them drawn without replacement, with
    ``per = ceil(len(steps) / kinds)`` (a rare kind's steps all kept and repeated, a common kind's thinned)."""
    groups: dict[str, list[SneakyStep]] = {}
    for step in steps:
        groups.setdefault(step.kind, []).append(step)
    per = -(-len(steps) // max(len(groups), 1))
    return [s for kind in sorted(groups) for s in groups[kind] * (per // len(groups[kind])) + rng.sample(groups[kind], per % len(groups[kind]))]


@dataclass
class Game:
    """One game: a correct step ``step`` at position ``len(prefix)`` of a solver's correct solution."""

    problem: Problem
    prefix: list[str]
    step: str
    sneaky: Rollout | None = None
    effective: bool = False
    critic_rewards: list[float] = field(default_factory=list)


def first_flagged(verdicts: Sequence[bool | None]) -> int:
    """Index of the first step the critic does not accept (``V:N`` or no verdict); -1 if all pass."""
    return next((index for index, verdict in enumerate(verdicts) if verdict is not True), -1)


def harmonic_mean(a: float, b: float) -> float:
    """``2 a b / (a + b)`` (0 when both are 0)."""
    return 2 * a * b / (a + b) if a + b else 0.0


def f1_score(truth: Sequence[bool], flagged: Sequence[bool]) -> float:
    """``2 P R / (P + R)`` with positive = erroneous (0 when nothing is both true and flagged)."""
    true_pos = sum(t and f for t, f in zip(truth, flagged))
    return harmonic_mean(true_pos / max(sum(flagged), 1), true_pos / max(sum(truth), 1))


def detection_metrics(solutions: Sequence[LabelledSolution], predicted: Sequence[int]) -> dict[str, float]:
    """Error-detection F1 / accuracy (positive = the solution has an error), first-error location accuracy,
    and ProcessBench's F1 (the SPC paper's benchmark metric): the harmonic mean of the accuracy on
    erroneous solutions (first error found at the right step) and on clean ones (accepted). Unlike the
    detection F1 (0.67 for a critic that flags everything when half the solutions are wrong), it is 0
    for a critic that flags everything or nothing."""
    truth = [s.error_index >= 0 for s in solutions]
    flagged = [p >= 0 for p in predicted]
    located = [s.error_index == p for s, p in zip(solutions, predicted)]
    on_errors = sum(hit for hit, t in zip(located, truth) if t) / max(sum(truth), 1)
    on_clean = sum(hit for hit, t in zip(located, truth) if not t) / max(len(truth) - sum(truth), 1)
    return {
        "critic_f1": f1_score(truth, flagged),
        "critic_accuracy": sum(t == f for t, f in zip(truth, flagged)) / len(truth),
        "critic_location_accuracy": sum(located) / len(truth),
        "critic_processbench_f1": harmonic_mean(on_errors, on_clean),
        **{
            f"critic_recall_{kind}": sum(p >= 0 for s, p in zip(solutions, predicted) if s.kind == kind)
            / max(sum(s.kind == kind for s in solutions), 1)
            for kind in ERROR_KINDS
        },
    }


def step_labels(
    solutions: Sequence[LabelledSolution], verdicts: Sequence[Sequence[bool | None]]
) -> tuple[list[bool], list[bool]]:
    """Step-level ``(truth, flagged)`` pairs: every step of a clean solution and the steps of an erroneous
    one up to its error (the later steps follow a wrong context and have no single right label);
    positive = the step is wrong, flagged = the critic did not answer ``V:Y``."""
    truth, flagged = [], []
    for solution, steps in zip(solutions, verdicts):
        last = solution.error_index if solution.error_index >= 0 else len(steps) - 1
        truth += [k == solution.error_index for k in range(last + 1)]
        flagged += [verdict is not True for verdict in steps[: last + 1]]
    return truth, flagged


def derivation_accuracy(task: ArithmeticTask, solutions: Sequence[LabelledSolution], critiques: Sequence[Sequence[str]]) -> float:
    """How often a critique's re-derived step equals the reference step, over the steps :func:`step_labels`
    scores (every step of a clean solution, an erroneous one's up to its error; 0 without derivations)."""
    hits = []
    for solution, texts in zip(solutions, critiques):
        reference = reference_steps(task, solution.problem)
        last = solution.error_index if solution.error_index >= 0 else len(texts) - 1
        hits += [parse_derivation(text) == reference[k] for k, text in enumerate(texts[: last + 1])]
    return sum(hits) / max(len(hits), 1)


class SPCObjective(GRPOObjective):
    """The official offline-RL loss (SPAG's ``OfflineWeightedPolicyTrainer``, run by SPC's
    ``scripts/rl_critic.sh`` on the game data and the round-0 SFT data together): the clipped policy
    loss averaged over the batch's game samples, plus ``sft_coefficient`` x the mean per-sequence NLL
    of its warm-up examples (rows with ``batch["sft"] == 1``, which carry no advantage and no KL)."""

    def __init__(self, *args, sft_coefficient: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sft_coefficient = sft_coefficient

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = self.completion_logprobs(model, batch)
        loss, logs = self.policy_loss(logprobs, batch)
        sft, rows = batch["sft"], float(batch["sft"].numel())
        game_rows = rows - float(sft.sum())
        loss = loss * rows / game_rows if game_rows else loss * 0.0  # the mean over game rows (sft rows add 0)
        if sft.sum() == 0:
            return loss, logs
        sft_loss = self.rows_nll(logprobs, batch, sft)
        logs["sft_nll"] = float(sft_loss.detach())
        return loss + self.sft_coefficient * sft_loss, logs


def verdict_consistency(solutions: Sequence[LabelledSolution], critiques: Sequence[Sequence[str]]) -> float:
    """How often a critique's verdict is the one its own re-derivation implies (:func:`implied_verdict`),
    over the steps :func:`step_labels` scores (0 without derivations)."""
    hits = []
    for solution, texts in zip(solutions, critiques):
        last = solution.error_index if solution.error_index >= 0 else len(texts) - 1
        hits += [
            implied_verdict(text, step) is not None and parse_verdict(text) is implied_verdict(text, step)
            for step, text in zip(solution.steps, texts[: last + 1])
        ]
    return sum(hits) / max(len(hits), 1)


class SPCTrainer(IterativeTrainer):
    config_class = SPCConfig
    uses_reward_fn = False  # rewards are the critic/sneaky game's outcomes
    plot_keys = (
        "accuracy", "critic_step_f1", "critic_f1", "critic_derivation_accuracy", "filtered_accuracy", "sneaky_success_rate",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.task, ArithmeticTask):
            raise ValueError(f"SPC needs an arithmetic task (add/arith/mul) for its rule-built steps, got {self.task.name!r}")
        self.detection_set = labelled_solutions(self.task, self.config.detection_problems, EVAL_SEED + 500, split="eval")

    # ------------------------------------------------------------- the roles

    def critique(self, items: Sequence[tuple[Problem, Sequence[str], str]], num_samples: int, seed: int, greedy: bool = False):
        """The critic's critiques of ``(problem, prefix, step)`` items, ``num_samples`` each (grouped by item)."""
        prompts = [critic_prompt(p.question, prefix, step, self.format.prompt) for p, prefix, step in items]
        return self.sample_role(prompts, num_samples, self.config.critic_max_new_tokens, seed, greedy)

    def sample_role(
        self, prompts: list[str], num_samples: int, max_new_tokens: int, seed: int, greedy: bool = False,
        stop: tuple[str, ...] = (),
    ) -> list[Rollout]:
        params = SamplingParams(
            temperature=0.0 if greedy else self.config.temperature, num_samples=num_samples,
            max_new_tokens=max_new_tokens, stop_strings=stop, batch_size=self.config.generation_batch_size,
        )
        return self.generate(prompts, params, seed)

    def step_critiques(self, problems: Sequence[Problem], solutions: Sequence[Sequence[str]], seed: int = 0) -> list[list[str]]:
        """The critic's greedy critique of every step of every solution."""
        items = [(p, list(steps[:k]), steps[k]) for p, steps in zip(problems, solutions) for k in range(len(steps))]
        texts = iter(r.text for r in self.critique(items, 1, seed, greedy=True))
        return [[next(texts) for _ in steps] for steps in solutions]

    def step_verdicts(
        self, problems: Sequence[Problem], solutions: Sequence[Sequence[str]], seed: int = 0
    ) -> list[list[bool | None]]:
        """The critic's greedy verdict on every step of every solution (``None``: no verdict)."""
        return [[self.verdict(text) for text in texts] for texts in self.step_critiques(problems, solutions, seed)]

    def verdict(self, critique: str) -> bool | None:
        """A critique's verdict: its ``V:`` line, or (``verdict_source="comparison"``) what its written
        comparison ``D:<step> vs <value>`` states (:func:`~selfgen.data.reasoning.comparison_verdict`)."""
        return comparison_verdict(critique) if self.config.verdict_source == "comparison" else parse_verdict(critique)

    def first_errors(self, problems: Sequence[Problem], solutions: Sequence[Sequence[str]], seed: int = 0) -> list[int]:
        """For each solution (its steps), the critic's first flagged step (-1: accepted; an empty one is flagged)."""
        verdicts = self.step_verdicts(problems, solutions, seed)
        return [first_flagged(v) if steps else 0 for v, steps in zip(verdicts, solutions)]

    # ------------------------------------------------------------- warm-up, game, update

    def warmup_pairs(self) -> list[TextPair]:
        """The warm-up's rule-built critic and sneaky examples and worked solutions (seeded, shuffled)."""
        config = self.config
        rng = random.Random(config.seed)
        examples = []
        for solution in labelled_solutions(self.task, config.warmup_examples, WARMUP_SEED + config.seed, 0.0):
            question, steps = solution.problem.question, solution.steps
            k = rng.randrange(len(steps))
            wrong = corrupt_step(steps[k], rng.choice(config.warmup_error_kinds), rng)
            if rng.random() < config.warmup_critic_fraction:
                judged = steps[k] if rng.random() < 0.5 else wrong
                critique = critic_completion(steps[k], judged, config.critique_format)
                weight = config.warmup_verdict_weight  # on the Y/N character
                verdict = ((len(critique) - 1, len(critique), weight),) if weight != 1.0 else ()
                examples.append(TextPair(critic_prompt(question, steps[:k], judged, self.format.prompt), critique, verdict))
            else:
                if config.sneaky_error_types:  # the paper's sneaky move: name one error type, then write that error
                    kind = rng.choice(config.sneaky_error_types)
                    wrong = f"{kind}:{corrupt_step(steps[k], kind, rng)}"
                examples.append(TextPair(sneaky_prompt(question, steps[:k], steps[k], self.format.prompt), wrong + "\n"))
        for problem in self.task.sample(config.warmup_examples // 3, WARMUP_SEED + 100 + config.seed):
            examples.append(TextPair(self.prompt(problem), self.task.worked_solution(problem)))
        rng.shuffle(examples)
        return examples

    def seed_round(self) -> Round:
        config = self.config
        examples = self.warmup_pairs()
        return Round(
            SFTObjective(), examples, SFTCollator(self.tokenizer, config.max_length), {"warmup_examples": float(len(examples))},
            max_train_steps=config.warmup_train_steps, learning_rate=config.warmup_learning_rate,
        )

    def replayed_warmup(self, count: int, iteration: int) -> list[PolicySample]:
        """``count`` warm-up examples (drawn per iteration) as rows of the SFT term: no advantage, no KL."""
        pairs = self.warmup_pairs()
        picked = random.Random(derive_seed(self.config.seed, iteration, "replay")).sample(pairs, min(count, len(pairs)))
        rows = [encode_pair(self.tokenizer, p.prompt, p.completion, self.config.max_length) for p in picked]
        return [
            PolicySample(prompt, completion, 0.0, [0.0] * len(completion), kl_weight=0.0, extras={"sft": 1.0})
            for prompt, completion in rows
        ]

    def games(self, problems: list[Problem], iteration: int) -> list[Game]:
        """One game per problem the solver solved: a random step of one of its correct solutions."""
        rng = random.Random(derive_seed(self.config.seed, iteration, "games"))
        k = self.config.samples_per_problem
        rollouts = self.solve(problems, seed=iteration)
        games = []
        for index, problem in enumerate(problems):
            correct = [r.text for r in rollouts[index * k : (index + 1) * k] if self.verify(problem, r.text)]
            steps = solution_steps(correct[0]) if correct else []
            if steps:
                position = rng.randrange(len(steps))
                games.append(Game(problem, steps[:position], steps[position]))
        return games

    def success_rates(self, games: list[Game], steps: list[str], seed: int) -> list[float]:
        """How often the solver reaches the answer from ``prefix + [step]`` (``validation_samples`` completions)."""
        n = self.config.validation_samples
        prompts = [partial_solution(g.problem.question, g.prefix + [step], self.format.prompt) for g, step in zip(games, steps)]
        rollouts = self.sample_role(prompts, n, self.config.max_new_tokens, seed)
        return [
            sum(self.verify(g.problem, r.text) for r in rollouts[i * n : (i + 1) * n]) / n for i, g in enumerate(games)
        ]

    def sneaky_step(self, move: str) -> str:
        """The step of a sneaky move: the text after its error type (``carry:4+8+0=12`` -> ``4+8+0=12``)
        with ``sneaky_error_types``, else the whole move."""
        move = move.strip()
        kind, sep, step = move.partition(":")
        return step if sep and kind in self.config.sneaky_error_types else move

    def play(self, games: list[Game], iteration: int) -> tuple[list[PolicySample], dict[str, float]]:
        """Sneaky moves, validation, critiques and rewards; returns the update's samples and the game's logs."""
        config = self.config
        prompts = [sneaky_prompt(g.problem.question, g.prefix, g.step, self.format.prompt) for g in games]
        sneaky_rollouts = self.sample_role(prompts, 1, config.step_max_new_tokens, iteration, stop=("\n",))
        for game, rollout in zip(games, sneaky_rollouts):
            game.sneaky = rollout
        original = self.success_rates(games, [g.step for g in games], iteration)
        sneaky = self.success_rates(games, [self.sneaky_step(g.sneaky.text) for g in games], iteration + 1)
        well_formed = [STEP_PATTERN.match(self.sneaky_step(g.sneaky.text)) is not None for g in games]
        for game, base_rate, sneaky_rate, formed in zip(games, original, sneaky, well_formed):
            changed = self.sneaky_step(game.sneaky.text) != game.step
            game.effective = sneaky_is_effective(base_rate, sneaky_rate, changed, config.min_original_success) and (
                formed or not config.require_step_form
            )
        played = [g for g in games if g.effective]
        current = [SneakyStep(g.problem, g.prefix, g.step, self.sneaky_step(g.sneaky.text)) for g in played]
        self.save_sneaky_steps(iteration, current)
        chosen = self.critic_steps(current, iteration)
        items = [(s.problem, s.prefix, s.sneaky) for s in chosen] + [(s.problem, s.prefix, s.step) for s in chosen]
        judged = self.judge(items, [True] * len(chosen) + [False] * len(chosen), seed=iteration)  # sneaky steps first
        samples = [self.policy_sample(r, reward) for rollouts, rewards in judged for r, reward in zip(rollouts, rewards)]
        on_wrong: dict[int, list[float]] = {}
        for step, (_, rewards) in zip(chosen, judged):
            on_wrong.setdefault(id(step), rewards)
        missing = [s for s in current if id(s) not in on_wrong]  # thinned out by the kind balance: judged for
        extra = self.judge([(s.problem, s.prefix, s.sneaky) for s in missing], [True] * len(missing), seed=iteration + 1)
        on_wrong.update({id(step): rewards for step, (_, rewards) in zip(missing, extra)})  # the sneaky reward only
        for game, step in zip(played, current):
            game.critic_rewards = on_wrong[id(step)]
        for game in games:
            reward = sneaky_reward(game.effective, game.critic_rewards)
            samples.append(self.policy_sample(game.sneaky, reward))
        on_errors = [reward for _, rewards in judged[: len(chosen)] for reward in rewards]
        on_correct = [reward for _, rewards in judged[len(chosen) :] for reward in rewards]
        logs = {
            "games": float(len(games)),
            "sneaky_success_rate": len(played) / max(len(games), 1),
            "critic_win_rate_on_errors": sum(r > 0 for r in on_errors) / max(len(on_errors), 1),
            "critic_win_rate_on_correct": sum(r > 0 for r in on_correct) / max(len(on_correct), 1),
            "critic_judged_steps": float(len(chosen)),
            "sneaky_well_formed_rate": sum(well_formed) / max(len(games), 1),
        }
        for kind in (*ERROR_KINDS, "other"):
            wins = [r > 0 for step, (_, rewards) in zip(chosen, judged) if step.kind == kind for r in rewards]
            logs[f"sneaky_kind_{kind}"] = sum(step.kind == kind for step in current) / max(len(current), 1)
            if wins:
                logs[f"critic_win_rate_{kind}"] = sum(wins) / len(wins)
        return samples, logs

    def judge(self, items: Sequence[tuple[Problem, Sequence[str], str]], wrong: Sequence[bool], seed: int):
        """``critic_samples`` critiques of each ``(problem, prefix, step)`` item and their game rewards
        (:func:`critic_rewards`, ``wrong``: the item's step is a sneaky one), grouped by item."""
        m = self.config.critic_samples
        critiques = self.critique(items, m, seed=seed) if items else []
        groups = [critiques[index * m : (index + 1) * m] for index in range(len(items))]
        return [(g, critic_rewards([self.verdict(r.text) for r in g], step_is_wrong=w)) for g, w in zip(groups, wrong)]

    def critic_steps(self, current: list[SneakyStep], iteration: int) -> list[SneakyStep]:
        """The sneaky steps the critic judges this round (each with its original step): this round's, plus,
        with ``sneaky_history="all"``, every earlier round's (the official round-2 critic trains on the
        game data of rounds 1 and 2), resampled to an equal share per error kind with ``critic_kind_balance``."""
        pool = current + (self.earlier_sneaky_steps(iteration) if self.config.sneaky_history == "all" else [])
        if self.config.critic_kind_balance:
            pool = balanced_by_kind(pool, random.Random(derive_seed(self.config.seed, iteration, "balance")))
        return pool

    def save_sneaky_steps(self, iteration: int, steps: Sequence[SneakyStep]) -> None:
        """This round's validated sneaky steps as JSON lines in ``iteration-k/sneaky_steps.jsonl``."""
        path = self.iteration_dir(iteration) / SNEAKY_STEPS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(step.to_json() + "\n" for step in steps))

    def earlier_sneaky_steps(self, iteration: int) -> list[SneakyStep]:
        """The validated sneaky steps of iterations ``1 .. iteration - 1`` (their ``sneaky_steps.jsonl``)."""
        steps = []
        for earlier in range(1, iteration):
            path = self.iteration_dir(earlier) / SNEAKY_STEPS_FILE
            if not path.is_file():
                raise FileNotFoundError(f"sneaky_history='all': {path} is missing (iteration {earlier} was not played by this run)")
            steps += [SneakyStep.from_json(line) for line in path.read_text().splitlines() if line.strip()]
        return steps

    @staticmethod
    def policy_sample(rollout: Rollout, reward: float) -> PolicySample:
        return PolicySample(rollout.prompt_ids, rollout.completion_ids, reward, rollout.logprobs, extras={"sft": 0.0})

    def build_round(self, iteration: int) -> Round:
        config = self.config
        games = self.games(self.problems(iteration), iteration)
        samples, logs = self.play(games, iteration)
        if config.rl_sft_coefficient > 0:  # as many warm-up examples as game samples
            samples += self.replayed_warmup(len(samples), iteration)
        objective = SPCObjective(
            frozen_copy(self.policy), beta=config.beta, epsilon_low=config.epsilon, epsilon_high=config.epsilon,
            temperature=config.temperature, sft_coefficient=config.rl_sft_coefficient,
        )
        return Round(objective, samples, GRPOCollator(self.tokenizer.pad_token_id), logs)

    # ------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, float]:
        rollouts = self.solve(self.eval_set, temperature=0.0, num_samples=1)
        correct = [self.verify(p, r.text) for p, r in zip(self.eval_set, rollouts)]
        accepted = [e == -1 for e in self.first_errors(self.eval_set, [solution_steps(r.text) for r in rollouts])]
        critiques = self.step_critiques([s.problem for s in self.detection_set], [s.steps for s in self.detection_set])
        verdicts = [[self.verdict(text) for text in texts] for texts in critiques]
        return {
            "critic_step_f1": f1_score(*step_labels(self.detection_set, verdicts)),
            "critic_derivation_accuracy": derivation_accuracy(self.task, self.detection_set, critiques),
            "critic_verdict_consistency": verdict_consistency(self.detection_set, critiques),
            "accuracy": sum(correct) / len(correct),
            "filtered_accuracy": sum(c and a for c, a in zip(correct, accepted)) / max(sum(accepted), 1),
            "accept_rate": sum(accepted) / len(accepted),
            **detection_metrics(self.detection_set, [first_flagged(v) for v in verdicts]),
        }


METHOD = Method(
    name="spc",
    summary="SPC: a sneaky generator corrupts steps, a critic finds them; both roles trained by offline RL on the game",
    config_class=SPCConfig,
    train=run_recipe(SPCTrainer),
)
